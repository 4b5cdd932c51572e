// Package store owns every SQL string grove runs. It opens the SQLite
// database ($GROVE_HOME/grove.db) with WAL, a busy timeout, full sync,
// foreign keys and immediate transactions, applies grove's schema and
// River's migrations, and reads and writes grove's rows.
//
// Contract: a Store has one connection. Never call a Store method while the
// same goroutine holds a Tx from InTx: that deadlocks. Everything that must
// commit together (a stage change and the insert of the next River job) goes
// through one InTx, whose Tx exposes SQL() for river.Client.InsertTx.
package store
