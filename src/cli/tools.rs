//! `prun schema`, `prun init`, `prun completions`, `prun man`: what editors, shells
//! and `man` need, generated from the same definitions prun itself uses.

use std::path::Path;

use clap::CommandFactory;

use super::{
    COMPLETE_VAR, Cli, CompletionsArgs, InitArgs, ManArgs, SchemaArgs, SchemaKind, emit, emit_err,
    exit,
};

/// Where `prun init` puts the schemas, relative to the new pipeline file.
const INIT_SCHEMA_DIR: &str = ".prun";

fn schema_text(kind: SchemaKind) -> String {
    let schema = match kind {
        SchemaKind::Pipeline => crate::syntax::schema::pipeline_schema_json(),
        SchemaKind::Report => crate::report::report_schema_json(),
    };
    format!("{schema}\n")
}

/// Write both schemas into `dir`; returns the pipeline schema's path.
fn write_schemas(dir: &Path) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for (kind, name) in [
        (SchemaKind::Pipeline, "pipeline.schema.json"),
        (SchemaKind::Report, "report.schema.json"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, schema_text(kind))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(dir.join("pipeline.schema.json"))
}

/// The first line of a pipeline file that points the YAML language server at a schema.
pub fn modeline(schema: &str) -> String {
    format!("# yaml-language-server: $schema={schema}")
}

pub(super) fn schema(a: SchemaArgs) -> i32 {
    match a.write {
        None => {
            emit(&schema_text(a.kind));
            exit::OK
        }
        Some(dir) => match write_schemas(&dir) {
            Ok(path) => {
                emit_err(&format!(
                    "wrote {} and report.schema.json; start each pipeline file with this line \
                     (the path is relative to the pipeline file):\n",
                    path.display()
                ));
                emit(&format!("{}\n", modeline(&path.display().to_string())));
                exit::OK
            }
            Err(e) => {
                emit_err(&format!("prun: {e}\n"));
                exit::USAGE
            }
        },
    }
}

const STARTER: &str = r#"version: 1
name: NAME
description: A producer and a consumer joined by a queue. Edit me; `prun` runs this file.

params:
  count: 3

queues:
  work: {}

stages:
  produce:
    sh: 'for i in $(seq 1 ${params.count}); do echo "item $i"; done'
    stdout: work
  consume:
    cmd: [cat]
    stdin: work
    stdout: inherit
"#;

pub(super) fn init(a: InitArgs) -> i32 {
    if a.file.exists() && !a.force {
        emit_err(&format!(
            "prun: {} exists; pass --force to replace it\n",
            a.file.display()
        ));
        return exit::USAGE;
    }
    let dir = match a.file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    if let Err(e) = write_schemas(&dir.join(INIT_SCHEMA_DIR)) {
        emit_err(&format!("prun: {e}\n"));
        return exit::USAGE;
    }
    let name = a
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| crate::syntax::interp::valid_ident(s) && *s != "prun")
        .map(str::to_string)
        .or_else(|| {
            std::env::current_dir()
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().to_lowercase()))
                .filter(|n| !n.is_empty())
        })
        .unwrap_or_else(|| "pipeline".into());
    let text = format!(
        "{}\n{}",
        modeline(&format!("{INIT_SCHEMA_DIR}/pipeline.schema.json")),
        STARTER.replace("NAME", &serde_json::to_string(&name).unwrap_or_default())
    );
    if let Err(e) = std::fs::write(&a.file, text) {
        emit_err(&format!("prun: cannot write {}: {e}\n", a.file.display()));
        return exit::USAGE;
    }
    let schemas = if dir == Path::new(".") {
        Path::new(INIT_SCHEMA_DIR).to_path_buf()
    } else {
        dir.join(INIT_SCHEMA_DIR)
    };
    emit_err(&format!(
        "wrote {} and {}/ (its JSON Schemas: editors with the YAML language server now complete and check it)\nrun it with `prun`{}\n",
        a.file.display(),
        schemas.display(),
        if a.file == Path::new("prun.yaml") {
            String::new()
        } else {
            format!(" {}", a.file.display())
        }
    ));
    exit::OK
}

/// The shell code that asks prun itself for completions at each Tab (so they always
/// match this binary: commands, options, and FILEs filtered to YAML).
pub(super) fn completions(a: CompletionsArgs) -> i32 {
    let name = a.shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let Some(shell) = shells.completer(&name) else {
        emit_err(&format!("prun: no completions for {name}\n"));
        return exit::USAGE;
    };
    let mut buf = Vec::new();
    match shell.write_registration(COMPLETE_VAR, "prun", "prun", "prun", &mut buf) {
        Ok(()) => {
            emit(&String::from_utf8_lossy(&buf));
            exit::OK
        }
        Err(e) => {
            emit_err(&format!("prun: {e}\n"));
            exit::USAGE
        }
    }
}

/// `prun man`: prun(1) on stdout; `--dir DIR`: prun.1 and prun-COMMAND.1 pages.
pub(super) fn man(a: ManArgs) -> i32 {
    let cmd = Cli::command();
    match a.dir {
        None => {
            let mut buf = Vec::new();
            match clap_mangen::Man::new(cmd).render(&mut buf) {
                Ok(()) => {
                    emit(&String::from_utf8_lossy(&buf));
                    exit::OK
                }
                Err(e) => {
                    emit_err(&format!("prun: {e}\n"));
                    exit::USAGE
                }
            }
        }
        Some(dir) => {
            let result =
                std::fs::create_dir_all(&dir).and_then(|_| clap_mangen::generate_to(cmd, &dir));
            match result {
                Ok(()) => {
                    emit_err(&format!("wrote the man pages into {}\n", dir.display()));
                    exit::OK
                }
                Err(e) => {
                    emit_err(&format!("prun: cannot write into {}: {e}\n", dir.display()));
                    exit::USAGE
                }
            }
        }
    }
}
