//! `prun ctl`: the control socket (SPEC 6).
