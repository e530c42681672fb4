//! One run, start to finish: the target, the Goose attack, and the post-run hook.
