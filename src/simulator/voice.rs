//! The agent's ear and mouth: energy-based voice activity detection with a hangover (its
//! endpointing), the simulated STT -> LLM -> TTS turn, and the answer's audio.
//!
//! VAD: a chunk of caller audio is voiced when its RMS exceeds [`VOICE_RMS`] (about -40 dBFS,
//! well above a phone line's noise floor and far below speech). Speech starts at the first
//! voiced chunk and counts as speech (an onset, which can barge in) from [`ONSET_MS`] of voiced
//! audio on; it ends when [`HANGOVER_MS`] of silence follows the last voiced chunk, measured
//! on the audio itself or, if the caller stops sending, on the wall clock. Sound that never
//! pauses (a caller streaming noise) would never end that way, so, as agents cap an utterance's
//! length, an unbroken run of voiced chunks ends the utterance once it reaches
//! `--max-utterance-ms`. Sound going on past that cut is the same caller still talking: the next
//! utterance, with no new onset (no barge-in).

use super::chance;
use crate::ai_model;
use crate::protocol::mulaw;
use base64::Engine;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// RMS (of 16-bit samples) above which a chunk is speech.
pub(crate) const VOICE_RMS: u64 = 300;
/// Silence after the last voiced chunk that ends an utterance (a typical endpointing value).
pub(crate) const HANGOVER_MS: u64 = 500;
/// Voiced audio needed before sound counts as speech (ignores clicks).
pub(crate) const ONSET_MS: u64 = 60;
/// Words per second of speech, for the transcript length a real STT would produce.
const WORDS_PER_SECOND: f64 = 2.5;
/// Answer audio per character of answer text, and its cap.
const ANSWER_MS_PER_CHAR: u64 = 60;
pub(crate) const MAX_ANSWER_MS: u64 = 6_000;

const SAMPLES_PER_MS: u64 = (mulaw::SAMPLE_RATE / 1000) as u64;
pub(crate) const HANGOVER: Duration = Duration::from_millis(HANGOVER_MS);

/// Square of each mu-law code's linear value, for RMS without decoding into a buffer.
static SQUARES: LazyLock<[u32; 256]> = LazyLock::new(|| {
    let mut t = [0u32; 256];
    for (b, sq) in t.iter_mut().enumerate() {
        let s = mulaw::decode(b as u8) as i32;
        *sq = (s * s) as u32;
    }
    t
});

/// Whether a chunk of mu-law audio is voiced.
pub(crate) fn is_voiced(mulaw: &[u8]) -> bool {
    if mulaw.is_empty() {
        return false;
    }
    let squares = &*SQUARES;
    let sum: u64 = mulaw.iter().map(|&b| squares[b as usize] as u64).sum();
    sum > VOICE_RMS * VOICE_RMS * mulaw.len() as u64
}

/// What the detector concluded from a chunk.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum VadEvent {
    /// Speech has begun (after [`ONSET_MS`] of voiced audio).
    Onset,
    /// An utterance ended: its length (first to last voiced sample) and when its last voiced
    /// chunk arrived.
    End { audio_ms: u64, speech_end: Instant },
}

/// The per-call voice activity detector.
#[derive(Debug, Default)]
pub(crate) struct Vad {
    /// Samples received so far.
    pos: u64,
    speech: Option<Speech>,
    /// Samples of voiced audio since the last unvoiced chunk, and the run that ends an utterance
    /// (0: no limit).
    run: u64,
    max_run: u64,
    /// The run was cut at `max_run` and has not paused since.
    cut: bool,
}

#[derive(Debug)]
struct Speech {
    start: u64,
    last_voiced_end: u64,
    last_voiced_at: Instant,
    voiced_samples: u64,
}

impl Vad {
    /// A detector that ends an utterance after `max_utterance_ms` of unbroken sound (0: never).
    pub(crate) fn new(max_utterance_ms: u64) -> Vad {
        Vad {
            max_run: max_utterance_ms * SAMPLES_PER_MS,
            ..Vad::default()
        }
    }

    /// Feeds one chunk of audio (`samples` long) received at `now`.
    pub(crate) fn push(&mut self, samples: u64, voiced: bool, now: Instant) -> Option<VadEvent> {
        let start = self.pos;
        self.pos += samples;
        if voiced {
            let speech = self.speech.get_or_insert(Speech {
                start,
                last_voiced_end: start,
                last_voiced_at: now,
                voiced_samples: 0,
            });
            let was_onset = speech.voiced_samples >= ONSET_MS * SAMPLES_PER_MS;
            speech.voiced_samples += samples;
            speech.last_voiced_end = self.pos;
            speech.last_voiced_at = now;
            let onset = speech.voiced_samples >= ONSET_MS * SAMPLES_PER_MS;
            self.run += samples;
            if self.max_run > 0 && self.run >= self.max_run {
                self.run = 0;
                self.cut = true;
                return self.finish();
            }
            return (onset && !was_onset && !self.cut).then_some(VadEvent::Onset);
        }
        self.run = 0;
        self.cut = false;
        let silent_for = self.pos - self.speech.as_ref()?.last_voiced_end;
        if silent_for >= HANGOVER_MS * SAMPLES_PER_MS {
            return self.finish();
        }
        None
    }

    /// When the wall-clock hangover runs out, if the caller is speaking.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.speech.as_ref().map(|s| s.last_voiced_at + HANGOVER)
    }

    /// Ends the utterance if the wall-clock hangover has passed (the caller went quiet
    /// without sending silence).
    pub(crate) fn poll_timeout(&mut self, now: Instant) -> Option<VadEvent> {
        if self.deadline()? <= now {
            // A pause: whatever comes next starts afresh.
            self.run = 0;
            self.cut = false;
            return self.finish();
        }
        None
    }

    fn finish(&mut self) -> Option<VadEvent> {
        let speech = self.speech.take()?;
        (speech.voiced_samples >= ONSET_MS * SAMPLES_PER_MS).then(|| VadEvent::End {
            audio_ms: (speech.last_voiced_end - speech.start) / SAMPLES_PER_MS,
            speech_end: speech.last_voiced_at,
        })
    }
}

/// Whether the agent leaves an utterance it heard unanswered (`--ai-mute-rate`): no audio, no
/// mark, nothing; the caller's turn times out.
pub(crate) fn mutes(rate: f64) -> bool {
    chance(&mut rand::rng(), rate)
}

/// One planned answer: when its first frame goes out and how many frames it has.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Answer {
    pub due: Instant,
    pub frames: usize,
}

/// The simulated pipeline for an utterance of `audio_ms`, started speculatively at the end of
/// speech and overlapping the hangover: the answer goes out at
/// `speech_end + max(hangover, stt + llm + tts)`, never before `now`.
pub(crate) fn plan_answer(audio_ms: u64, speech_end: Instant, now: Instant, slowdown: f64) -> Answer {
    // A real STT would produce about this many words; their content is unknown here.
    let words = ((audio_ms as f64 / 1000.0) * WORDS_PER_SECOND).round().max(1.0) as usize;
    let transcript = vec!["wort"; words].join(" ");
    let answer = ai_model::answer_text(&transcript);
    let latency = ai_model::latencies(&mut rand::rng(), audio_ms as f64, &transcript, &answer, slowdown);
    let answer_ms = (answer.chars().count() as u64 * ANSWER_MS_PER_CHAR).min(MAX_ANSWER_MS);
    Answer {
        due: (speech_end + latency.total().max(HANGOVER)).max(now),
        frames: answer_ms.div_ceil(mulaw::FRAME_MS) as usize,
    }
}

/// The answer's audio, frame by frame, as base64 payloads: a voice-like signal (a 140 Hz
/// glottal buzz with formant-ish harmonics, at syllable rate) prepared once for all calls.
pub(crate) static ANSWER_PAYLOADS: LazyLock<Vec<String>> = LazyLock::new(|| {
    let frames = (MAX_ANSWER_MS / mulaw::FRAME_MS) as usize;
    let samples: Vec<i16> = (0..frames * mulaw::FRAME_BYTES).map(voice_sample).collect();
    mulaw::encode_all(&samples)
        .chunks(mulaw::FRAME_BYTES)
        .map(|frame| base64::engine::general_purpose::STANDARD.encode(frame))
        .collect()
});

fn voice_sample(n: usize) -> i16 {
    let t = n as f64 / mulaw::SAMPLE_RATE as f64;
    let tau = std::f64::consts::TAU;
    let buzz: f64 = (1..=12)
        .map(|h| {
            let formant = 1.0 + 2.0 * (-((h as f64 * 140.0 - 700.0) / 500.0).powi(2)).exp();
            (tau * 140.0 * h as f64 * t).sin() * formant / h as f64
        })
        .sum();
    // Syllables at about 4 Hz.
    let envelope = 0.55 + 0.45 * (tau * 4.0 * t).sin();
    (buzz * envelope * 4_000.0).clamp(-32_000.0, 32_000.0) as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u64, amplitude: f64) -> Vec<u8> {
        let n = (ms * SAMPLES_PER_MS) as usize;
        let samples: Vec<i16> = (0..n)
            .map(|i| (amplitude * (std::f64::consts::TAU * 440.0 * i as f64 / 8000.0).sin()) as i16)
            .collect();
        mulaw::encode_all(&samples)
    }

    #[test]
    fn loud_is_voiced_and_silence_or_hiss_is_not() {
        assert!(is_voiced(&tone(20, 8000.0)));
        assert!(!is_voiced(&[mulaw::SILENCE; 160]));
        assert!(!is_voiced(&tone(20, 100.0)));
        assert!(!is_voiced(&[]));
    }

    fn feed(vad: &mut Vad, frames: usize, voiced: bool, t0: Instant, at: &mut u64) -> Vec<VadEvent> {
        (0..frames)
            .filter_map(|_| {
                *at += 20;
                vad.push(160, voiced, t0 + Duration::from_millis(*at))
            })
            .collect()
    }

    #[test]
    fn an_utterance_ends_after_the_hangover() {
        let (mut vad, t0, mut at) = (Vad::default(), Instant::now(), 0);
        assert!(feed(&mut vad, 10, false, t0, &mut at).is_empty());
        assert_eq!(feed(&mut vad, 50, true, t0, &mut at), vec![VadEvent::Onset]);
        let speech_end = t0 + Duration::from_millis(at);
        // A pause shorter than the hangover is part of the utterance.
        assert!(feed(&mut vad, 10, false, t0, &mut at).is_empty());
        assert!(feed(&mut vad, 5, true, t0, &mut at).is_empty());
        let speech_end2 = t0 + Duration::from_millis(at);
        assert!(speech_end2 > speech_end);
        assert!(feed(&mut vad, 24, false, t0, &mut at).is_empty());
        assert_eq!(
            feed(&mut vad, 1, false, t0, &mut at),
            vec![VadEvent::End {
                audio_ms: 1300,
                speech_end: speech_end2
            }]
        );
        assert!(feed(&mut vad, 100, false, t0, &mut at).is_empty());
    }

    #[test]
    fn clicks_are_not_speech() {
        let (mut vad, t0, mut at) = (Vad::default(), Instant::now(), 0);
        assert!(feed(&mut vad, 2, true, t0, &mut at).is_empty());
        assert!(feed(&mut vad, 40, false, t0, &mut at).is_empty());
    }

    #[test]
    fn unbroken_sound_is_cut_into_utterances_without_new_onsets() {
        let (mut vad, t0, mut at) = (Vad::new(1000), Instant::now(), 0);
        // 1 s of sound: one onset, and the utterance ends on its 50th chunk.
        assert_eq!(feed(&mut vad, 49, true, t0, &mut at), vec![VadEvent::Onset]);
        let cut = feed(&mut vad, 1, true, t0, &mut at);
        assert_eq!(
            cut,
            vec![VadEvent::End {
                audio_ms: 1000,
                speech_end: t0 + Duration::from_millis(at)
            }]
        );
        // The sound goes on: the next utterance, with no onset (the caller never stopped).
        let more = feed(&mut vad, 50, true, t0, &mut at);
        assert!(
            matches!(more.as_slice(), [VadEvent::End { audio_ms: 1000, .. }]),
            "{more:?}"
        );
        // After a pause, sound is a new onset; speech with pauses is never cut.
        assert_eq!(feed(&mut vad, 1, false, t0, &mut at), vec![]);
        assert_eq!(feed(&mut vad, 40, true, t0, &mut at), vec![VadEvent::Onset]);
        for _ in 0..3 {
            assert!(feed(&mut vad, 1, false, t0, &mut at).is_empty());
            assert!(feed(&mut vad, 40, true, t0, &mut at).is_empty());
        }
        let end = feed(&mut vad, 25, false, t0, &mut at);
        assert!(
            matches!(end.as_slice(), [VadEvent::End { audio_ms: 3260, .. }]),
            "{end:?}"
        );
        // No limit: sound goes on as one utterance.
        let (mut endless, mut at) = (Vad::new(0), 0);
        assert_eq!(feed(&mut endless, 500, true, t0, &mut at), vec![VadEvent::Onset]);
    }

    #[test]
    fn the_wall_clock_ends_speech_when_frames_stop() {
        let (mut vad, t0, mut at) = (Vad::default(), Instant::now(), 0);
        feed(&mut vad, 10, true, t0, &mut at);
        let deadline = vad.deadline().unwrap();
        assert_eq!(deadline, t0 + Duration::from_millis(at) + HANGOVER);
        assert_eq!(vad.poll_timeout(deadline - Duration::from_millis(1)), None);
        assert!(matches!(
            vad.poll_timeout(deadline),
            Some(VadEvent::End { audio_ms: 200, .. })
        ));
        assert_eq!(vad.deadline(), None);
    }

    #[test]
    fn answers_follow_the_latency_model() {
        let t0 = Instant::now();
        // A short utterance waits at least the hangover.
        let short = plan_answer(400, t0, t0, 1.0);
        assert!(short.due >= t0 + HANGOVER);
        assert!(short.frames >= 20, "{short:?}");
        // Eight seconds of speech: STT alone is about 2.45 s.
        let long = plan_answer(8000, t0, t0, 1.0);
        let wait = long.due - t0;
        assert!(
            wait > Duration::from_millis(2000) && wait < Duration::from_millis(4500),
            "{wait:?}"
        );
        assert_eq!(long.frames, (MAX_ANSWER_MS / 20) as usize);
        let slow = plan_answer(8000, t0, t0, 3.0);
        assert!(slow.due - t0 > wait * 3 / 2, "{:?} vs {wait:?}", slow.due - t0);
        // Never due in the past.
        let late = t0 + Duration::from_secs(60);
        assert_eq!(plan_answer(400, t0, late, 1.0).due, late);
    }

    #[test]
    fn mute_rate_is_a_share_of_answers() {
        assert!(!mutes(0.0) && mutes(1.0));
        assert!(!mutes(f64::NAN) && mutes(2.0) && !mutes(-1.0));
        let muted = (0..10_000).filter(|_| mutes(0.25)).count();
        assert!((2_200..=2_800).contains(&muted), "{muted} of 10000 muted at 0.25");
    }

    #[test]
    fn answer_audio_sounds_like_a_voice() {
        assert_eq!(ANSWER_PAYLOADS.len(), 300);
        let frame = base64::engine::general_purpose::STANDARD
            .decode(&ANSWER_PAYLOADS[7])
            .unwrap();
        assert_eq!(frame.len(), 160);
        assert!(is_voiced(&frame));
    }
}
