//! Post-run hooks: they add figures and verdicts, and their errors and panics are contained.

use super::synthetic::healthy_record;
use phone_agent_load::analysis::results::Results;
use phone_agent_load::analysis::verdicts::{Status, Verdict};
use phone_agent_load::analysis::{analyse, PostRunHook, RunRecord};
use phone_agent_load::config::plan::AiMode;

struct AddsFigureAndVerdict;
impl PostRunHook for AddsFigureAndVerdict {
    fn name(&self) -> &str {
        "webhook p99"
    }
    fn after_run(&self, run: &RunRecord, results: &mut Results) -> anyhow::Result<()> {
        let p99 = run.goose.as_ref().map(|g| g.requests.len() as f64).unwrap_or(0.0);
        results.add_figure("rows", p99, "");
        let band = phone_agent_load::config::profile::Band {
            warning: 1.0,
            critical: 2.0,
        };
        results.add_verdict(Verdict::judged("rows seen", p99, "", band, true, Some("api")));
        Ok(())
    }
}

struct Fails;
impl PostRunHook for Fails {
    fn name(&self) -> &str {
        "fails"
    }
    fn after_run(&self, _: &RunRecord, _: &mut Results) -> anyhow::Result<()> {
        anyhow::bail!("no database")
    }
}

struct Panics;
impl PostRunHook for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn after_run(&self, _: &RunRecord, _: &mut Results) -> anyhow::Result<()> {
        panic!("hook bug")
    }
}

#[test]
fn hooks_add_figures_and_verdicts_and_their_failures_are_contained() {
    let hooks: Vec<Box<dyn PostRunHook>> =
        vec![Box::new(Fails), Box::new(Panics), Box::new(AddsFigureAndVerdict)];
    let r = analyse(&healthy_record(AiMode::Stream), &hooks);
    assert_eq!(r.hook_errors.len(), 2, "{:?}", r.hook_errors);
    assert!(r.hook_errors[0].contains("'fails'") && r.hook_errors[0].contains("no database"));
    assert!(r.hook_errors[1].contains("hook bug"));
    assert_eq!(r.figures[0].value, 3.0);
    let v = r.verdicts.last().unwrap();
    assert_eq!((v.metric.as_str(), v.status), ("rows seen", Status::Critical));
    assert!(
        !r.passed && !r.api.ran().unwrap().success,
        "a hook's critical verdict fails its section"
    );
    assert!(r.ai_pipeline.ran().unwrap().success);
}
