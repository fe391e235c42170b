//! Dockerfiles (`docker build`): the parser, then the planner's stage resolution on what
//! parsed; `.dockerignore` files and ONBUILD triggers.
#![no_main]

use berth_builder::{parse, parse_trigger, BuildOptions, DockerIgnore, Planner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(df) = parse(text) {
        let _ = Planner::new(df.clone(), BuildOptions::default());
        let target = BuildOptions {
            target: Some("build".into()),
            ..BuildOptions::default()
        };
        let _ = Planner::new(df, target);
    }
    let _ = parse_trigger(text);
    if let Ok(ignore) = DockerIgnore::try_parse(text) {
        let _ = ignore.is_excluded("a/b/c.txt");
    }
    if let Some((pattern, path)) = text.split_once('\n') {
        let _ = berth_builder::glob_match(pattern, path);
    }
});
