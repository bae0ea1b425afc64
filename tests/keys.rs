//! One source for every key: the key tables of docs/format.md are generated from
//! `src/syntax/keys.rs` (as are the schema's descriptions and the checker's key lists).
//! Run with `PRUN_BLESS=1` to rewrite the tables after changing a key.

use std::path::Path;

#[test]
fn format_md_key_tables_match_the_key_table() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/format.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let fresh = prun::syntax::keys::render_doc(&doc);
    if std::env::var_os("PRUN_BLESS").is_some() {
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    for block in prun::syntax::keys::ALL {
        if block.name == "included" || block.name == "fd" || block.name == "file-in" {
            continue;
        }
        let marker = format!("<!-- keys:{} -->", block.name);
        assert!(
            doc.contains(&marker),
            "docs/format.md lacks the {marker} table"
        );
    }
    assert!(
        doc == fresh,
        "docs/format.md key tables are out of date: run `PRUN_BLESS=1 cargo test --test keys`"
    );
}

#[test]
fn every_key_has_a_meaning() {
    for block in prun::syntax::keys::ALL {
        for key in block.keys {
            assert!(
                key.doc.len() > 10 && key.doc.ends_with('.'),
                "{}.{}: {:?}",
                block.name,
                key.name,
                key.doc
            );
        }
    }
}
