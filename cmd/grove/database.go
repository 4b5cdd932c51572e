package main

import (
	"os"
)

// databaseFlagHelp documents --database (a persistent flag: every command
// talks to the same database as the daemon).
const databaseFlagHelp = "PostgreSQL URL (postgres://user@host/db) shared by several grove hosts (default $GROVE_DATABASE; empty: SQLite in the home)"

// databaseURL is the database every command uses: --database, else
// $GROVE_DATABASE, else "" (SQLite in the home).
func (a *app) databaseURL() string {
	if a.database != "" {
		return a.database
	}
	return os.Getenv("GROVE_DATABASE")
}
