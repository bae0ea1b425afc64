//! `--junit FILE` (SPEC 7): one test case per instance, failures with their last log
//! lines, as CI systems read test runners' reports.

mod run_util;

use run_util::Test;

const YAML: &str = r#"version: 1
name: ju
stages:
  ok: {cmd: [echo, fine]}
  bad: {cmd: [sh, -c, 'for i in $(seq 1 25); do echo "step $i"; done; echo "<b>&</b> config missing"; exit 3'], on_failure: continue}
  nope: {cmd: [/nonexistent/prog], on_failure: continue, after: {bad: completed}}
  later: {cmd: [true], after: {bad: succeeded}}
"#;

fn well_formed(xml: &str) {
    let mut reader = quick_xml::Reader::from_str(xml);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("not well-formed XML: {e}\n{xml}"),
        }
    }
}

#[test]
fn junit_has_a_case_per_instance_and_failures_with_their_last_lines() {
    let t = Test::new(YAML);
    let out = t.run_with("r.json", &["--junit", "junit.xml"]);
    out.assert_code(3);
    let xml = t.read("junit.xml");
    well_formed(&xml);
    assert!(
        xml.contains(r#"tests="4" failures="1" errors="1" skipped="1""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="ok" classname="ju.ok""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<failure message="failed (exit 3)" type="failed">"#),
        "{xml}"
    );
    assert!(
        xml.contains("&lt;b&gt;&amp;&lt;/b&gt; config missing</failure>"),
        "{xml}"
    );
    assert!(
        xml.contains(">step 7\n") && !xml.contains("step 6\n"),
        "the last 20 lines: {xml}"
    );
    assert!(xml.contains(r#"<error message="could not start"#), "{xml}");
    assert!(xml.contains(r#"<skipped message="skipped"#), "{xml}");
}

#[test]
fn junit_from_the_environment_and_a_bad_path_is_a_usage_error() {
    let t = Test::new(YAML);
    let out = t
        .command("r.json", &[])
        .env("PRUN_JUNIT", t.path("env.xml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    well_formed(&t.read("env.xml"));
    let bad = t.run_with("r.json", &["--junit", "no-such-dir/j.xml"]);
    bad.assert_code(2);
    assert!(bad.stderr.contains("--junit"), "{}", bad.context());
}
