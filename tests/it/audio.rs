//! The caller's speech through the public API: the shipped utterances, and a user's `--audio-dir`
//! of WAVs written here by an independent writer (hound) or by hand (mu-law).

use phone_agent_load::ai_model::UTTERANCES;
use phone_agent_load::config::utterances::{self as audio, Utterance};
use phone_agent_load::protocol::mulaw;
use std::f64::consts::TAU;
use std::path::{Path, PathBuf};

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/audio")
}

fn linear(u: &Utterance) -> Vec<f64> {
    u.mulaw.iter().map(|&b| mulaw::decode(b) as f64).collect()
}

fn rms(samples: &[f64]) -> f64 {
    (samples.iter().map(|s| s * s).sum::<f64>() / samples.len() as f64).sqrt()
}

/// A tone's frequency from its zero crossings, skipping the first and last 50 ms (edge effects).
fn frequency(samples: &[f64]) -> f64 {
    let mid = &samples[400..samples.len() - 400];
    let crossings = mid.windows(2).filter(|w| (w[0] < 0.0) != (w[1] < 0.0)).count();
    crossings as f64 / 2.0 / (mid.len() as f64 / 8_000.0)
}

/// Writes a PCM WAV with hound; `channel(c, t)` gives channel c at time t in [-1, 1].
fn write_pcm(path: &Path, rate: u32, channels: u16, bits: u16, secs: f64, channel: impl Fn(u16, f64) -> f64) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: bits,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    let full_scale = (1i64 << (bits - 1)) as f64 - 1.0;
    for i in 0..(secs * rate as f64).round() as usize {
        for c in 0..channels {
            w.write_sample((channel(c, i as f64 / rate as f64) * full_scale).round() as i32)
                .unwrap();
        }
    }
    w.finalize().unwrap();
}

fn write_float(path: &Path, rate: u32, secs: f64, f: impl Fn(f64) -> f64) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..(secs * rate as f64).round() as usize {
        w.write_sample(f(i as f64 / rate as f64) as f32).unwrap();
    }
    w.finalize().unwrap();
}

/// An 8 kHz mono mu-law WAV, as Twilio and sox write it (fmt of 18 bytes, a fact chunk).
fn mulaw_wav(data: &[u8]) -> Vec<u8> {
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&(4 + 26 + 12 + 8 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt \x12\0\0\0");
    out.extend_from_slice(&[7, 0, 1, 0]); // mu-law, mono
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&8_000u32.to_le_bytes());
    out.extend_from_slice(&[1, 0, 8, 0, 0, 0]); // block align, bits, cbSize
    out.extend_from_slice(b"fact\x04\0\0\0");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out
}

fn sine(freq: f64, amplitude: f64) -> impl Fn(f64) -> f64 {
    move |t| amplitude * (TAU * freq * t).sin()
}

fn load_one(dir: &Path) -> Utterance {
    let mut all = audio::load_dir(dir).unwrap();
    assert_eq!(all.len(), 1);
    all.remove(0)
}

fn load_err(dir: &Path) -> String {
    format!("{:#}", audio::load_dir(dir).unwrap_err())
}

#[test]
fn builtin_has_the_twelve_utterances_as_plausible_speech() {
    let builtin = audio::builtin();
    let texts: Vec<_> = builtin.iter().map(|u| u.text.as_str()).collect();
    assert_eq!(texts, UTTERANCES);
    for u in &builtin {
        let secs = audio::duration(u).as_secs_f64();
        assert!((0.3..10.0).contains(&secs), "{:?}: {secs} s", u.text);
        // Silence decodes to 0; speech normalised to -3 dBFS is in the thousands.
        let level = rms(&linear(u));
        assert!(level > 1_000.0, "{:?}: rms {level}", u.text);
        // Speech has pauses and loud parts: not a constant level.
        let frames: Vec<f64> = linear(u).chunks(160).map(rms).collect();
        let loudest = frames.iter().cloned().fold(0.0, f64::max);
        assert!(
            frames.iter().any(|&f| f < loudest / 4.0),
            "{:?}: no dynamics",
            u.text
        );
    }
    // Longer text, longer audio: wherever one text is twice as long as another.
    for a in &builtin {
        for b in &builtin {
            if a.text.chars().count() >= 2 * b.text.chars().count() {
                assert!(
                    audio::duration(a) > audio::duration(b),
                    "{:?} vs {:?}",
                    a.text,
                    b.text
                );
            }
        }
    }
}

#[test]
fn the_shipped_texts_file_matches_the_model() {
    let shipped = std::fs::read_to_string(shipped_dir().join("utterances.txt")).unwrap();
    let expected: String = UTTERANCES
        .iter()
        .enumerate()
        .map(|(i, t)| format!("{:02}\t{t}\n", i + 1))
        .collect();
    assert_eq!(
        shipped, expected,
        "rerun scripts/gen-audio after changing ai_model::UTTERANCES"
    );
}

#[test]
fn the_shipped_dir_loads_as_the_builtin_set() {
    let loaded = audio::load_dir(&shipped_dir()).unwrap();
    let builtin = audio::builtin();
    assert_eq!(loaded.len(), builtin.len());
    for (l, b) in loaded.iter().zip(&builtin) {
        assert_eq!((&l.text, &l.mulaw), (&b.text, &b.mulaw));
    }
}

#[test]
fn pcm16_stereo_at_16k_and_44k_keeps_duration_and_pitch() {
    for rate in [16_000, 44_100] {
        let dir = tempfile::tempdir().unwrap();
        let tone = sine(1_000.0, 0.5);
        write_pcm(&dir.path().join("tone.wav"), rate, 2, 16, 1.5, |_, t| tone(t));
        let u = load_one(dir.path());
        assert_eq!(u.text, "tone");
        assert!(
            u.mulaw.len().abs_diff(12_000) <= 1,
            "{rate} Hz: {} samples",
            u.mulaw.len()
        );
        let samples = linear(&u);
        let f = frequency(&samples);
        assert!(
            (f - 1_000.0).abs() < 10.0,
            "{rate} Hz: a 1 kHz tone came out at {f} Hz"
        );
        // Amplitude 0.5 -> rms 0.354 of full scale, within mu-law's few percent.
        let level = rms(&samples[400..samples.len() - 400]) / 32_768.0;
        assert!((level - 0.354).abs() < 0.02, "{rate} Hz: rms {level}");
    }
}

#[test]
fn mulaw_8k_keeps_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let tone = sine(440.0, 0.3);
    let data: Vec<u8> = (0..4_000)
        .map(|i| mulaw::encode((tone(i as f64 / 8e3) * 32_767.0) as i16))
        .collect();
    std::fs::write(dir.path().join("a.wav"), mulaw_wav(&data)).unwrap();
    let u = load_one(dir.path());
    assert_eq!(u.mulaw, data);
    assert_eq!(audio::duration(&u).as_millis(), 500);
}

#[test]
fn tones_above_the_phone_band_are_filtered_not_aliased() {
    // 6 kHz is above 8 kHz audio's 4 kHz Nyquist: naive decimation would fold it to 2 kHz.
    let dir = tempfile::tempdir().unwrap();
    write_pcm(&dir.path().join("hiss.wav"), 48_000, 1, 16, 0.5, |_, t| {
        sine(6_000.0, 0.5)(t)
    });
    let samples = linear(&load_one(dir.path()));
    let level = rms(&samples[400..samples.len() - 400]);
    assert!(level < 100.0, "rms {level} of 11585 got through");
}

#[test]
fn channels_are_averaged() {
    let dir = tempfile::tempdir().unwrap();
    // Opposite channels cancel; a tone on one channel of two comes out at half level.
    write_pcm(&dir.path().join("a.wav"), 8_000, 2, 16, 0.5, |c, t| {
        if c == 0 {
            sine(500.0, 0.5)(t)
        } else {
            -sine(500.0, 0.5)(t)
        }
    });
    write_pcm(&dir.path().join("b.wav"), 8_000, 2, 16, 0.5, |c, t| {
        if c == 0 {
            sine(500.0, 0.8)(t)
        } else {
            0.0
        }
    });
    let all = audio::load_dir(dir.path()).unwrap();
    assert!(rms(&linear(&all[0])) < 50.0);
    let half = rms(&linear(&all[1])) / 32_768.0;
    assert!((half - 0.4 / 2f64.sqrt()).abs() < 0.02, "rms {half}");
}

#[test]
fn other_sample_formats_decode_alike() {
    let dir = tempfile::tempdir().unwrap();
    let tone = sine(1_000.0, 0.5);
    write_pcm(&dir.path().join("1-pcm16.wav"), 22_050, 1, 16, 0.5, |_, t| {
        tone(t)
    });
    write_pcm(&dir.path().join("2-pcm24.wav"), 22_050, 1, 24, 0.5, |_, t| {
        tone(t)
    });
    write_pcm(&dir.path().join("3-pcm32.wav"), 22_050, 1, 32, 0.5, |_, t| {
        tone(t)
    });
    write_pcm(&dir.path().join("4-pcm8.wav"), 22_050, 1, 8, 0.5, |_, t| tone(t));
    write_float(&dir.path().join("5-float.wav"), 22_050, 0.5, &tone);
    let all = audio::load_dir(dir.path()).unwrap();
    let texts: Vec<_> = all.iter().map(|u| u.text.as_str()).collect();
    assert_eq!(
        texts,
        ["1-pcm16", "2-pcm24", "3-pcm32", "4-pcm8", "5-float"],
        "sorted by name"
    );
    let reference = linear(&all[0]);
    for u in &all {
        let s = linear(u);
        assert_eq!(s.len(), reference.len(), "{}", u.text);
        assert!((frequency(&s) - 1_000.0).abs() < 10.0, "{}", u.text);
        let diff: Vec<f64> = s.iter().zip(&reference).map(|(a, b)| a - b).collect();
        // 8-bit PCM is coarse; the rest differ only by mu-law rounding.
        let tolerance = if u.text == "4-pcm8" { 0.03 } else { 0.005 };
        assert!(
            rms(&diff) / 32_768.0 < tolerance,
            "{}: rms diff {}",
            u.text,
            rms(&diff)
        );
    }
}

#[test]
fn texts_come_from_the_dirs_utterances_file() {
    let dir = tempfile::tempdir().unwrap();
    write_pcm(&dir.path().join("a.wav"), 8_000, 1, 16, 0.2, |_, t| {
        sine(300.0, 0.5)(t)
    });
    write_pcm(&dir.path().join("b.wav"), 8_000, 1, 16, 0.2, |_, t| {
        sine(300.0, 0.5)(t)
    });
    std::fs::write(dir.path().join("utterances.txt"), "a\tGuten Morgen.\n\n").unwrap();
    let texts: Vec<_> = audio::load_dir(dir.path())
        .unwrap()
        .into_iter()
        .map(|u| u.text)
        .collect();
    assert_eq!(texts, ["Guten Morgen.", "b"]);
    std::fs::write(dir.path().join("utterances.txt"), "a Guten Morgen.\n").unwrap();
    let err = load_err(dir.path());
    assert!(
        err.contains("utterances.txt:1: expected `name<TAB>text`"),
        "{err}"
    );
}

#[test]
fn bad_dirs_and_files_are_clear_errors_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let missing = root.join("nope");
    assert_eq!(
        load_err(&missing),
        format!("audio dir {} does not exist", missing.display())
    );
    let file = root.join("file.wav");
    std::fs::write(&file, b"x").unwrap();
    assert_eq!(
        load_err(&file),
        format!("audio dir {} is not a directory", file.display())
    );

    let empty_dir = root.join("empty");
    std::fs::create_dir(&empty_dir).unwrap();
    std::fs::write(empty_dir.join("notes.txt"), b"no audio here").unwrap();
    std::fs::create_dir(empty_dir.join("folder.wav")).unwrap();
    assert_eq!(
        load_err(&empty_dir),
        format!("audio dir {} has no .wav files", empty_dir.display())
    );

    let pcm = |secs| {
        let p = root.join("pcm.wav");
        write_pcm(&p, 16_000, 1, 16, secs, |_, t| sine(300.0, 0.5)(t));
        std::fs::read(p).unwrap()
    };
    let mut no_samples = pcm(0.0);
    no_samples.truncate(44);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.wav", vec![], "the file is empty"),
        (
            "text.wav",
            b"this is not audio at all".to_vec(),
            "not a WAV file (no RIFF/WAVE header)",
        ),
        (
            "adpcm.wav",
            {
                let mut b = pcm(0.5);
                b[20] = 2;
                b
            },
            "unsupported WAV encoding (format tag 0x0002); supported: PCM, IEEE float, mu-law, A-law",
        ),
        ("silent.wav", no_samples, "no audio samples"),
        (
            "short.wav",
            pcm(0.09),
            "too short: 0.090 s of audio (at least 100 ms)",
        ),
        (
            "long.wav",
            mulaw_wav(&vec![0xFF; 8_000 * 61]),
            "too long: 61.0 s of audio (at most 60 s)",
        ),
    ];
    for (name, bytes, why) in cases {
        let case_dir = root.join(format!("case-{}", name.trim_end_matches(".wav")));
        std::fs::create_dir(&case_dir).unwrap();
        let path = case_dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_err(&case_dir);
        assert_eq!(err, format!("{}: {why}", path.display()));
        assert!(!err.contains('\n'));
    }

    // A link to nowhere is reported, not skipped.
    let dangling_dir = root.join("dangling");
    std::fs::create_dir(&dangling_dir).unwrap();
    let link = dangling_dir.join("gone.wav");
    std::os::unix::fs::symlink(root.join("no-such-target"), &link).unwrap();
    let err = load_err(&dangling_dir);
    assert!(
        err.starts_with(&format!("{}: cannot read: ", link.display())),
        "{err}"
    );
}

#[test]
fn one_bad_file_fails_the_whole_dir() {
    let dir = tempfile::tempdir().unwrap();
    write_pcm(&dir.path().join("a.wav"), 8_000, 1, 16, 0.5, |_, t| {
        sine(300.0, 0.5)(t)
    });
    std::fs::write(dir.path().join("b.WAV"), b"").unwrap();
    let err = load_err(dir.path());
    assert!(err.ends_with("b.WAV: the file is empty"), "{err}");
}
