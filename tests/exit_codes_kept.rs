//! The real exit code of an instance is never lost (issue 11): `success_codes: [0, 3]`
//! and exit 3 is `succeeded` with exit code 3 in the report and the table.

mod run_util;

use run_util::Test;

#[test]
fn a_success_code_other_than_zero_is_reported_as_it_was() {
    let out = Test::new(
        r#"
version: 1
stages:
  three: {sh: 'exit 3', success_codes: [0, 3]}
"#,
    )
    .run();
    out.assert_code(0);
    let i = out.instance("three");
    assert_eq!(i["state"], "succeeded", "{}", out.context());
    assert_eq!(i["exit_code"], 3, "{}", out.context());
    let row = out
        .stderr
        .lines()
        .find(|l| l.starts_with("three "))
        .unwrap_or_else(|| panic!("no table row\n{}", out.context()));
    assert!(row.split_whitespace().any(|w| w == "3"), "{row}");
}
