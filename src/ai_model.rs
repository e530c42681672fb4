//! The original suite's AI pipeline model: its utterances and its STT -> LLM -> TTS latencies.
//!
//! Shared by the simulator (which answers media-stream calls with these delays) and by
//! `--ai-mode mock` (the original's in-process `MockAudioProcessor`), so both behave alike.

use rand::Rng;
use std::time::Duration;

/// The caller's twelve German utterances, from "Ja." to two long sentences.
pub const UTTERANCES: [&str; 12] = [
    "Ja.",
    "Nein, danke.",
    "Guten Tag.",
    "Ich möchte einen Termin vereinbaren.",
    "Wann haben Sie morgen Zeit?",
    "Können Sie mich bitte zurückrufen?",
    "Meine Telefonnummer ist null eins fünf eins, zwei drei vier fünf sechs sieben acht.",
    "Ich habe Schmerzen im unteren Rücken seit drei Tagen.",
    "Wie lange dauert die Behandlung ungefähr?",
    "Gibt es noch einen freien Termin am Freitagvormittag?",
    "Ich würde gerne einen Termin für nächste Woche Dienstag um vierzehn Uhr vereinbaren, \
     wenn das bei Ihnen möglich ist.",
    "Unsere Heizung ist seit gestern Abend komplett ausgefallen und es wird langsam sehr kalt \
     in der Wohnung, können Sie heute noch jemanden vorbeischicken?",
];

/// The audio durations the original mock drew from, in ms.
pub const AUDIO_DURATIONS_MS: [u64; 8] = [500, 1000, 1500, 2000, 2500, 3000, 4000, 5000];

/// The pause between turns: U(0.5, 1.5) s.
pub fn pause_between_turns(rng: &mut impl Rng) -> Duration {
    Duration::from_secs_f64(rng.random_range(0.5..=1.5))
}

/// Stage latencies of one turn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StageLatencies {
    pub stt: Duration,
    pub llm: Duration,
    pub tts: Duration,
}

impl StageLatencies {
    pub fn total(&self) -> Duration {
        self.stt + self.llm + self.tts
    }
}

/// The LLM's answer for a caller's text: about twice as many words, as the model assumes.
pub fn answer_text(caller_text: &str) -> String {
    let words = caller_text.split_whitespace().count().max(1);
    let base =
        "Vielen Dank für Ihren Anruf, ich kümmere mich gerne darum und melde mich mit einem passenden Termin";
    base.split_whitespace()
        .cycle()
        .take((words * 2).clamp(4, 40))
        .collect::<Vec<_>>()
        .join(" ")
        + "."
}

/// The original latency model, in ms, with its random factors:
/// STT = (50 + 0.3 x audio_ms) x U(0.8, 1.2);
/// LLM = (100 + 0.5 x (tin + tout)) x U(0.8, 1.3), tin = words x 1.3, tout = 2 x tin;
/// TTS = (75 + 0.5 x characters of the answer) x U(0.8, 1.2).
/// `slowdown` multiplies all three (the simulator's `--ai-slowdown`).
pub fn latencies(
    rng: &mut impl Rng,
    audio_ms: f64,
    caller_text: &str,
    answer: &str,
    slowdown: f64,
) -> StageLatencies {
    let words = caller_text.split_whitespace().count() as f64;
    let tin = words * 1.3;
    let tout = 2.0 * tin;
    let stt = (50.0 + 0.3 * audio_ms) * rng.random_range(0.8..=1.2);
    let llm = (100.0 + 0.5 * (tin + tout)) * rng.random_range(0.8..=1.3);
    let tts = (75.0 + 0.5 * answer.chars().count() as f64) * rng.random_range(0.8..=1.2);
    let ms = |v: f64| Duration::from_secs_f64((v * slowdown).max(0.0) / 1000.0);
    StageLatencies {
        stt: ms(stt),
        llm: ms(llm),
        tts: ms(tts),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_stays_in_its_bounds() {
        let mut rng = rand::rng();
        for _ in 0..1000 {
            let l = latencies(&mut rng, 2000.0, "Guten Tag.", "Hallo.", 1.0);
            let stt = l.stt.as_secs_f64() * 1000.0;
            assert!((650.0 * 0.8 - 1e-6..=650.0 * 1.2 + 1e-6).contains(&stt), "{stt}");
            let llm = l.llm.as_secs_f64() * 1000.0; // tin 2.6, tout 5.2
            assert!((103.9 * 0.8 - 1e-6..=103.9 * 1.3 + 1e-6).contains(&llm), "{llm}");
        }
        let slow = latencies(&mut rng, 1000.0, "Ja.", "Ja.", 3.0);
        assert!(slow.stt.as_secs_f64() * 1000.0 >= 350.0 * 0.8 * 3.0 - 1e-6);
    }

    #[test]
    fn answers_grow_with_the_question() {
        assert!(answer_text(UTTERANCES[11]).len() > answer_text(UTTERANCES[0]).len());
    }
}
