// Package scheduler turns cron specs into River periodic jobs.
//
// A spec is anything robfig/cron/v3's ParseStandard accepts: five fields
// ("*/10 * * * *"), descriptors ("@hourly") and intervals ("@every 10m").
// A parsed cron.Schedule already has River's PeriodicSchedule method
// (Next(time.Time) time.Time), so Jobs hands it to river.NewPeriodicJob
// as is.
//
// River runs periodic jobs on the elected leader only and does not replay
// runs missed while no daemon was up, so every job built here has
// RunOnStart: a daemon that starts runs each maintenance pass once at
// once, then on schedule.
//
// Imports point down: scheduler may import jobs; jobs never imports
// scheduler.
package scheduler
