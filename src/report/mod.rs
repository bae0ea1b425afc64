//! Final report and terminal output (SPEC 7): consumes runtime events only.

/// Temporary: replaced by the report types' schema when the supervisor lands.
pub fn report_schema_json() -> String {
    String::from("{}")
}
