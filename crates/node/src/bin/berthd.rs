//! berthd: the berth daemon's executable. Everything lives in the `berth_node` library
//! (so the fuzz targets in `fuzz/` can reach its pure parsers, [`berth_node::fuzzing`]).

fn main() -> anyhow::Result<()> {
    berth_node::main()
}
