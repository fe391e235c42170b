//! Root integration tests: real busybox containers through the shim and libcontainer.
//! Run through the fixture: `cargo run -q -p berth-testkit --bin berth-fixture -- run --
//! cargo test -p berth-runtime`.

mod support;

use std::time::Duration;

use anyhow::Result;
use berth_runtime::logs::Stream;
use berth_runtime::Status;
use support::*;

#[test]
fn true_exits_zero() -> Result<()> {
    let t = TestRuntime::new()?;
    let (id, exit) = t.run(&["/bin/true"], opts())?;
    assert_eq!(exit.code, 0);
    assert!(!exit.oom_killed);
    assert_eq!(t.rt.inspect(&id)?.status, Status::Exited);
    Ok(())
}

#[test]
fn exit_code_is_reported() -> Result<()> {
    let t = TestRuntime::new()?;
    let (_, exit) = t.run(&["sh", "-c", "exit 3"], opts())?;
    assert_eq!(exit.code, 3);
    Ok(())
}
