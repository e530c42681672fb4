//! The post-run hook: real-time factor, memory growth, verdicts, the results file and the report.
