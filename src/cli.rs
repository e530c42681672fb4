//! The command line: Goose's own options plus the crate's, and the `serve` / `merge` commands.

pub fn main() -> i32 {
    0
}
