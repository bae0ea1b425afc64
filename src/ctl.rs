//! `prun ctl`: the control socket (SPEC 6). Temporary shim until the real one lands.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {}
pub fn ctl_main(_: CtlArgs) -> i32 {
    2
}
