//! WAV files as Twilio's phone audio: any common WAV (PCM 8/16/24/32-bit, float 32/64-bit,
//! mu-law, A-law; any rate and channel count) downmixed, resampled to 8 kHz with rubato and
//! encoded as G.711 mu-law.
//!
//! WAV bytes are untrusted (a user's `--audio-dir`, a gaggle manager's recordings): the small
//! RIFF parser below bounds every length and never panics.

use super::mulaw;
use anyhow::{bail, Context, Result};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Async, Fft, FixedAsync, FixedSync, Resampler, SincInterpolationParameters};

/// The output rate: one mu-law byte per 8 kHz sample.
const RATE_OUT: u32 = mulaw::SAMPLE_RATE;
/// Input rates outside this range are not audio recordings (and would make resampling huge).
const RATE_RANGE: std::ops::RangeInclusive<u32> = 1_000..=768_000;
/// More channels than any real recording has: a header claiming more is lying.
const MAX_CHANNELS: usize = 64;

/// The length of a WAV's audio in seconds, from its header alone (before any costly decoding).
pub fn duration_secs(bytes: &[u8]) -> Result<f64> {
    Ok(Wav::parse(bytes)?.duration_secs())
}

/// Any WAV (PCM 8/16/24/32-bit, float 32/64-bit, mu-law, A-law; any rate and channel count)
/// as 8 kHz mono mu-law.
pub fn decode_wav(bytes: &[u8]) -> Result<Vec<u8>> {
    let wav = Wav::parse(bytes)?;
    let samples = resample(wav.mono_samples(), wav.format.sample_rate)?;
    Ok(samples.iter().map(|&s| mulaw::encode(to_i16(s))).collect())
}

/// How the samples of a WAV's data chunk are stored.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Encoding {
    /// Integers, left-justified in 1..=4 bytes; 8-bit is unsigned.
    Int,
    Float,
    MuLaw,
    ALaw,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Format {
    encoding: Encoding,
    channels: usize,
    sample_rate: u32,
    /// Bytes per sample of one channel.
    sample_bytes: usize,
}

/// A parsed WAV: its format and its data chunk (bounded by the bytes actually present).
#[derive(Debug)]
struct Wav<'a> {
    format: Format,
    data: &'a [u8],
}

impl<'a> Wav<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Self> {
        match bytes.get(..4) {
            Some(b"RIFF") if bytes.get(8..12) == Some(b"WAVE") => {}
            Some(b"RIFX") => bail!("unsupported WAV: big-endian (RIFX)"),
            Some(b"RF64") => bail!("unsupported WAV: RF64"),
            _ => bail!("not a WAV file (no RIFF/WAVE header)"),
        }
        let (mut fmt, mut data) = (None, None);
        for (id, body) in chunks(&bytes[12..]) {
            match &id {
                b"fmt " if fmt.is_none() => fmt = Some(parse_fmt(body)?),
                b"data" if data.is_none() => data = Some(body),
                _ => {}
            }
        }
        let format = fmt.context("not a valid WAV file (no fmt chunk)")?;
        let data = data.context("not a valid WAV file (no data chunk)")?;
        let wav = Wav { format, data };
        if wav.frames() == 0 {
            bail!("no audio samples");
        }
        Ok(wav)
    }

    fn frame_bytes(&self) -> usize {
        self.format.channels * self.format.sample_bytes
    }

    fn frames(&self) -> usize {
        self.data.len() / self.frame_bytes()
    }

    fn duration_secs(&self) -> f64 {
        self.frames() as f64 / self.format.sample_rate as f64
    }

    /// The channels averaged into one, in [-1, 1]; a trailing partial frame is dropped.
    fn mono_samples(&self) -> Vec<f32> {
        let Format {
            encoding,
            channels,
            sample_bytes,
            ..
        } = self.format;
        self.data
            .chunks_exact(self.frame_bytes())
            .map(|frame| {
                let sum: f32 = frame
                    .chunks_exact(sample_bytes)
                    .map(|s| sample(encoding, s))
                    .sum();
                sum / channels as f32
            })
            .collect()
    }
}

/// The RIFF chunks after the `WAVE` tag: (id, body). A body claiming more bytes than remain is
/// cut to what is there (streaming writers leave the data size at 0xFFFFFFFF).
fn chunks(mut rest: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    std::iter::from_fn(move || {
        let id: [u8; 4] = rest.get(..4)?.try_into().ok()?;
        let size = u32_le(rest.get(4..8)?) as usize;
        let after = &rest[8..];
        let body = &after[..size.min(after.len())];
        // Chunks are padded to an even length.
        let next = size.saturating_add(size & 1).min(after.len());
        rest = &after[next..];
        Some((id, body))
    })
}

fn parse_fmt(body: &[u8]) -> Result<Format> {
    if body.len() < 16 {
        bail!(
            "not a valid WAV file (fmt chunk of {} bytes, need 16)",
            body.len()
        );
    }
    let mut tag = u16_le(&body[0..2]);
    let channels = u16_le(&body[2..4]) as usize;
    let sample_rate = u32_le(&body[4..8]);
    let block_align = u16_le(&body[12..14]) as usize;
    let bits = u16_le(&body[14..16]) as usize;
    if tag == 0xFFFE {
        tag = extensible_subformat(body)?;
    }
    let encoding = match tag {
        1 => Encoding::Int,
        3 => Encoding::Float,
        6 => Encoding::ALaw,
        7 => Encoding::MuLaw,
        _ => bail!(
            "unsupported WAV encoding (format tag {tag:#06x}); supported: PCM, IEEE float, mu-law, A-law"
        ),
    };
    if channels == 0 || channels > MAX_CHANNELS {
        bail!("invalid WAV header: {channels} channels");
    }
    if !RATE_RANGE.contains(&sample_rate) {
        bail!(
            "unsupported sample rate {sample_rate} Hz (supported: {}..={} Hz)",
            RATE_RANGE.start(),
            RATE_RANGE.end()
        );
    }
    let sample_bytes = bits.div_ceil(8);
    let supported = match encoding {
        Encoding::Int => (1..=4).contains(&sample_bytes),
        Encoding::Float => sample_bytes == 4 || sample_bytes == 8,
        Encoding::MuLaw | Encoding::ALaw => sample_bytes == 1,
    };
    if !supported {
        bail!("unsupported WAV: {bits}-bit {encoding:?} samples");
    }
    if block_align != channels * sample_bytes {
        bail!("invalid WAV header: block align {block_align} for {channels} x {bits}-bit samples");
    }
    Ok(Format {
        encoding,
        channels,
        sample_rate,
        sample_bytes,
    })
}

/// WAVE_FORMAT_EXTENSIBLE: the real format tag is the first two bytes of the subformat GUID.
fn extensible_subformat(body: &[u8]) -> Result<u16> {
    // The rest of the GUID every standard subformat shares (KSDATAFORMAT_SUBTYPE_*).
    const GUID_TAIL: [u8; 14] = [0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71];
    let guid = body
        .get(24..40)
        .context("invalid WAV header: extensible fmt chunk too short")?;
    if guid[2..] != GUID_TAIL {
        bail!("unsupported WAV encoding (non-standard extensible subformat)");
    }
    Ok(u16_le(&guid[..2]))
}

/// One sample of one channel as a float in [-1, 1]; `bytes` has the format's sample size.
fn sample(encoding: Encoding, bytes: &[u8]) -> f32 {
    match encoding {
        Encoding::Int => int_sample(bytes),
        Encoding::Float => {
            let v = match bytes.len() {
                4 => f32::from_le_bytes(bytes.try_into().unwrap_or_default()),
                _ => f64::from_le_bytes(bytes.try_into().unwrap_or_default()) as f32,
            };
            // NaN or infinity would poison the resampler's whole output.
            if v.is_finite() {
                v.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }
        Encoding::MuLaw => mulaw::decode(bytes[0]) as f32 / 32_768.0,
        Encoding::ALaw => alaw_decode(bytes[0]) as f32 / 32_768.0,
    }
}

/// A little-endian integer of 1..=4 bytes scaled to [-1, 1); 8-bit WAV samples are unsigned.
fn int_sample(bytes: &[u8]) -> f32 {
    if let [b] = bytes {
        return (*b as f32 - 128.0) / 128.0;
    }
    // Place the bytes at the top of an i32 so the sign comes along, whatever the width.
    let mut word = [0u8; 4];
    word[4 - bytes.len()..].copy_from_slice(bytes);
    i32::from_le_bytes(word) as f32 / 2_147_483_648.0
}

/// G.711 A-law to linear 16-bit (the reference algorithm, as in Sun's g711.c).
fn alaw_decode(code: u8) -> i16 {
    let a = code ^ 0x55;
    let segment = (a >> 4) & 0x07;
    let mut magnitude = ((a & 0x0F) as i16) << 4;
    magnitude += match segment {
        0 => 8,
        _ => 0x108,
    };
    if segment > 1 {
        magnitude <<= segment - 1;
    }
    if a & 0x80 != 0 {
        magnitude
    } else {
        -magnitude
    }
}

/// Resamples mono audio to 8 kHz. Fixed-ratio FFT resampling (rubato's choice for whole clips)
/// when the rates share a large factor, as every common rate does with 8 kHz; an odd rate would
/// make the FFT as long as a second of audio, so those go through the sinc resampler instead.
fn resample(samples: Vec<f32>, rate_in: u32) -> Result<Vec<f32>> {
    if rate_in == RATE_OUT || samples.is_empty() {
        return Ok(samples);
    }
    let frames = samples.len();
    let input = InterleavedSlice::new(&samples, 1, frames).context("resampling")?;
    let block_in = rate_in / gcd(rate_in, RATE_OUT);
    let mut resampler: Box<dyn Resampler<f32>> = if block_in <= 2_048 {
        Box::new(Fft::<f32>::new(
            rate_in as usize,
            RATE_OUT as usize,
            1_024,
            1,
            FixedSync::Both,
        )?)
    } else {
        let ratio = RATE_OUT as f64 / rate_in as f64;
        let params = SincInterpolationParameters::default();
        Box::new(Async::<f32>::new_sinc(
            ratio,
            1.0,
            &params,
            1_024,
            1,
            FixedAsync::Input,
        )?)
    };
    let out = resampler
        .process_all(&input, frames, None)
        .context("resampling")?;
    Ok(out.take_data())
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn to_i16(s: f32) -> i16 {
    (s * 32_768.0).round().clamp(-32_768.0, 32_767.0) as i16
}

fn u16_le(b: &[u8]) -> u16 {
    u16::from_le_bytes([b[0], b[1]])
}

fn u32_le(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A canonical 44-byte-header WAV around `data`.
    pub(crate) fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let align = channels * bits.div_ceil(8);
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVEfmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        out.extend_from_slice(&rate.wrapping_mul(align as u32).to_le_bytes());
        out.extend_from_slice(&align.to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn mulaw_8k_mono_passes_through_unchanged() {
        let data: Vec<u8> = (0..=255u8).filter(|&b| b != 0x7F).cycle().take(1_600).collect();
        assert_eq!(decode_wav(&wav(7, 1, 8_000, 8, &data)).unwrap(), data);
    }

    #[test]
    fn alaw_reference_values() {
        assert_eq!(alaw_decode(0xD5), 8);
        assert_eq!(alaw_decode(0x55), -8);
        assert_eq!(alaw_decode(0xAA), 32_256);
        assert_eq!(alaw_decode(0x2A), -32_256);
        // Magnitude grows with the code within the positive half (codes ordered after ^0x55).
        let mut codes: Vec<u8> = (0x80..=0xFFu8).map(|c| c ^ 0x55).collect();
        codes.sort_by_key(|&c| c ^ 0x55);
        let values: Vec<i16> = codes.iter().map(|&c| alaw_decode(c)).collect();
        assert!(values.windows(2).all(|w| w[0] < w[1]), "{values:?}");
    }

    #[test]
    fn int_samples_of_every_width() {
        assert_eq!(int_sample(&[0]), -1.0);
        assert_eq!(int_sample(&[128]), 0.0);
        assert_eq!(int_sample(&i16::MIN.to_le_bytes()), -1.0);
        assert_eq!(int_sample(&0x4000i16.to_le_bytes()), 0.5);
        assert_eq!(int_sample(&[0, 0, 0xC0]), -0.5);
        assert_eq!(int_sample(&(i32::MAX / 2 + 1).to_le_bytes()), 0.5);
    }

    #[test]
    fn chunks_are_walked_padded_and_bounded() {
        let mut riff = Vec::new();
        riff.extend_from_slice(b"odd \x03\0\0\0abc\0"); // 3 bytes + 1 pad
        riff.extend_from_slice(b"data\xFF\xFF\xFF\xFFxy"); // claims 4 GiB, has 2
        let got: Vec<_> = chunks(&riff).collect();
        assert_eq!(got, vec![(*b"odd ", &b"abc"[..]), (*b"data", &b"xy"[..])]);
        assert_eq!(chunks(b"dat").count(), 0);
    }

    #[test]
    fn header_errors_say_what_is_wrong() {
        let pcm = [0u8; 3_200];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"hello, world".to_vec(), "not a WAV file"),
            (b"RIFX\0\0\0\0WAVE".to_vec(), "big-endian"),
            (
                wav(2, 1, 8_000, 4, &pcm),
                "unsupported WAV encoding (format tag 0x0002)",
            ),
            (wav(1, 0, 8_000, 16, &pcm), "0 channels"),
            (wav(1, 1, 0, 16, &pcm), "unsupported sample rate 0 Hz"),
            (wav(1, 1, 8_000, 40, &pcm), "40-bit Int"),
            (wav(3, 1, 8_000, 16, &pcm), "16-bit Float"),
            (wav(1, 1, 8_000, 16, &[]), "no audio samples"),
            (wav(1, 2, 8_000, 16, &[1, 2]), "no audio samples"),
            (wav(1, 1, 8_000, 16, &pcm)[..36].to_vec(), "no data chunk"),
        ];
        for (bytes, want) in cases {
            let err = format!("{:#}", decode_wav(&bytes).unwrap_err());
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
        let mut lying = wav(1, 1, 8_000, 16, &pcm);
        lying[32] = 7; // block align
        let err = decode_wav(&lying).unwrap_err().to_string();
        assert!(err.contains("block align 7"), "{err}");
    }

    #[test]
    fn extensible_format_is_read_through_its_subformat() {
        let samples: Vec<u8> = (0..1_600i16)
            .flat_map(|i| ((i % 50) * 400).to_le_bytes())
            .collect();
        let plain = wav(1, 1, 8_000, 16, &samples);
        let mut ext = plain[..20].to_vec();
        ext[16] = 40; // fmt size
        ext.extend_from_slice(&[0xFE, 0xFF]);
        ext.extend_from_slice(&plain[22..36]);
        ext.extend_from_slice(&[22, 0, 16, 0, 4, 0, 0, 0]); // cbSize, valid bits, channel mask
        ext.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]);
        ext.extend_from_slice(&plain[36..]);
        assert_eq!(decode_wav(&ext).unwrap(), decode_wav(&plain).unwrap());
        ext[50] = 0; // break the GUID (its 7th byte, 0x10)
        assert!(decode_wav(&ext).unwrap_err().to_string().contains("non-standard"));
    }

    #[test]
    fn an_odd_rate_goes_through_the_sinc_resampler() {
        // 11_003 Hz is prime: no FFT block fits it.
        let rate = 11_003;
        let data: Vec<u8> = (0..rate as usize)
            .flat_map(|i| ((i % 40) as i16 * 500).to_le_bytes())
            .collect();
        let out = decode_wav(&wav(1, 1, rate, 16, &data)).unwrap();
        assert!(out.len().abs_diff(8_000) <= 1, "{}", out.len());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode_wav(&bytes);
        }

        #[test]
        fn decode_never_panics_on_mangled_headers(
            tag in prop_oneof![Just(1u16), Just(3), Just(6), Just(7), any::<u16>()],
            channels in 0u16..6,
            rate in prop_oneof![Just(8_000u32), Just(44_100), 0u32..800_000, any::<u32>()],
            bits in prop_oneof![Just(8u16), Just(16), Just(24), Just(32), Just(64), any::<u16>()],
            data in proptest::collection::vec(any::<u8>(), 0..600),
            cut in any::<prop::sample::Index>(),
            flip in any::<(prop::sample::Index, u8)>(),
        ) {
            let mut bytes = wav(tag, channels, rate, bits, &data);
            if let Ok(out) = decode_wav(&bytes) {
                // Output length follows the rates, so a lying header cannot inflate it.
                prop_assert!(out.len() <= data.len() * 8 + 2);
            }
            let i = flip.0.index(bytes.len());
            bytes[i] ^= flip.1;
            let _ = decode_wav(&bytes);
            let _ = decode_wav(&bytes[..cut.index(bytes.len())]);
        }
    }
}
