//! Final report and terminal output (SPEC 7): consumes runtime events only.
