//! JSON Schema of the pipeline file (placeholder, filled below).
