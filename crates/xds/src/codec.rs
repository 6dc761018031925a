//! The gRPC codec of the generated ADS client and server: prost's, with 1 KiB starting buffers
//! instead of tonic's 8 KiB.
//!
//! Why: the control plane holds one ADS stream per sidecar for as long as the sidecar lives, and
//! tonic gives every stream a decode buffer of the codec's starting size that lives as long as
//! the stream. A sidecar's requests (subscriptions, ACKs) are a few hundred bytes, so 8 KiB each
//! was 8.2 KB of the control plane's 157 KB of heap per connected sidecar (heaptrack, 2,000
//! sidecars, `bench/control.sh`'s mesh). Buffers still grow to the largest message they carry,
//! so nothing is refused or split: only the idle cost shrinks.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec, ProstCodec};

/// Starting size of the encode and decode buffers of each stream.
const BUFFER: usize = 1024;
/// tonic's default: a response stream hands its encoded bytes to HTTP/2 once this many are
/// waiting.
const YIELD_THRESHOLD: usize = 32 * 1024;

/// [`ProstCodec`] with [`BUFFER`]-sized starting buffers (tonic-build's `codec_path`).
#[derive(Debug, Clone)]
pub struct SmallBuffers<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for SmallBuffers<T, U> {
    fn default() -> Self {
        SmallBuffers(PhantomData)
    }
}

impl<T, U> Codec for SmallBuffers<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(BUFFER, YIELD_THRESHOLD))
    }
}
