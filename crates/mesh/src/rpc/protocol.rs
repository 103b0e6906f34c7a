//! Wire format of a request-response exchange: one stream per request.
//!
//! ```text
//! request:  len: u32 big-endian | body: len bytes        (then the requester closes its write half)
//! response: status: u8 | len: u32 big-endian | body: len bytes
//! ```
//! Status 0 carries the handler's answer; any other status is a refusal whose body
//! is a short UTF-8 reason. Lengths above the protocol's limits are refused before
//! any body byte is read, so a peer cannot make us buffer more than the limit.

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest refusal reason sent or read.
pub const REASON_BYTES_MAX: usize = 256;

/// How a response frame begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The handler's answer follows.
    Ok = 0,
    /// The requester exceeded its request rate.
    RateLimited = 1,
    /// The request frame declared more bytes than the protocol allows.
    RequestTooLarge = 2,
    /// The handler refused or failed; the body says why.
    HandlerError = 3,
    /// Too many requests are in progress on this protocol.
    Busy = 4,
    /// The request frame ended early or did not parse.
    Malformed = 5,
}

impl Status {
    /// The status of a byte, if it is one.
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0 => Self::Ok,
            1 => Self::RateLimited,
            2 => Self::RequestTooLarge,
            3 => Self::HandlerError,
            4 => Self::Busy,
            5 => Self::Malformed,
            _ => return None,
        })
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The declared length is above the limit.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// An unknown status byte.
    #[error("unknown status byte {0}")]
    BadStatus(u8),
    /// The stream ended or failed mid-frame.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Write a request frame.
pub async fn write_request<S: AsyncWrite + Unpin>(io: &mut S, body: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// Read the length of a request frame, refusing one above `max` before reading its body.
pub async fn read_request_len<S: AsyncRead + Unpin>(
    io: &mut S,
    max: usize,
) -> Result<usize, FrameError> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len);
    let len = usize::try_from(len).map_err(|_| FrameError::TooLarge {
        len: u64::from(len),
        max,
    })?;
    if len > max {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max,
        });
    }
    Ok(len)
}

/// Read exactly `len` body bytes.
pub async fn read_body<S: AsyncRead + Unpin>(io: &mut S, len: usize) -> std::io::Result<Vec<u8>> {
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(body)
}

/// Write a response frame.
pub async fn write_response<S: AsyncWrite + Unpin>(
    io: &mut S,
    status: Status,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len()).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    let mut head = [0u8; 5];
    head[0] = status as u8;
    head[1..].copy_from_slice(&len.to_be_bytes());
    io.write_all(&head).await?;
    io.write_all(body).await?;
    io.flush().await
}

/// Read a response frame whose answer may be up to `max` bytes (refusals: [`REASON_BYTES_MAX`]).
pub async fn read_response<S: AsyncRead + Unpin>(
    io: &mut S,
    max: usize,
) -> Result<(Status, Vec<u8>), FrameError> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await?;
    let status = Status::from_byte(head[0]).ok_or(FrameError::BadStatus(head[0]))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let limit = if status == Status::Ok {
        max
    } else {
        REASON_BYTES_MAX
    };
    if len > limit {
        return Err(FrameError::TooLarge {
            len: len as u64,
            max: limit,
        });
    }
    Ok((status, read_body(io, len).await?))
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_lengths_are_refused_before_the_body() {
        futures::executor::block_on(async {
            let mut buf = Cursor::new(Vec::new());
            write_request(&mut buf, b"hello").await.expect("write");
            let mut read = Cursor::new(buf.into_inner());
            let len = read_request_len(&mut read, 5).await.expect("len");
            assert_eq!(read_body(&mut read, len).await.expect("body"), b"hello");

            let mut read = Cursor::new(u32::MAX.to_be_bytes().to_vec());
            assert!(matches!(
                read_request_len(&mut read, 1024).await,
                Err(FrameError::TooLarge {
                    len: 4_294_967_295,
                    max: 1024
                })
            ));

            let mut buf = Cursor::new(Vec::new());
            write_response(&mut buf, Status::Ok, &[1; 10])
                .await
                .expect("write");
            let bytes = buf.into_inner();
            let (status, body) = read_response(&mut Cursor::new(bytes.clone()), 10)
                .await
                .expect("fits");
            assert_eq!((status, body.len()), (Status::Ok, 10));
            assert!(matches!(
                read_response(&mut Cursor::new(bytes), 9).await,
                Err(FrameError::TooLarge { .. })
            ));
            assert!(matches!(
                read_response(&mut Cursor::new(vec![9, 0, 0, 0, 0]), 9).await,
                Err(FrameError::BadStatus(9))
            ));
        });
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2_000))]

        /// Whatever a peer sends as a frame, reading it answers without panicking, and a body
        /// handed on is never larger than the limit of its kind.
        #[test]
        fn any_bytes_read_as_frames_stay_within_their_limits(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600),
            max in 0usize..512,
        ) {
            futures::executor::block_on(async {
                let mut read = Cursor::new(bytes.clone());
                if let Ok((status, body)) = read_response(&mut read, max).await {
                    let limit = if status == Status::Ok { max } else { REASON_BYTES_MAX };
                    proptest::prop_assert!(body.len() <= limit);
                    proptest::prop_assert_eq!(&body[..], &bytes[5..5 + body.len()]);
                }
                let mut read = Cursor::new(bytes.clone());
                if let Ok(len) = read_request_len(&mut read, max).await {
                    proptest::prop_assert!(len <= max);
                    if let Ok(body) = read_body(&mut read, len).await {
                        proptest::prop_assert_eq!(&body[..], &bytes[4..4 + len]);
                    }
                }
                Ok(())
            })?;
        }
    }
}
