//! Content negotiation of API bodies (RFC 9110 §12), the same for every role: a request body
//! is CBOR or JSON by its `Content-Type` (`protocol::wire`: the same message, byte strings
//! as base64url in JSON); anything else is refused, and each role answers that with its
//! own 415 problem. The answer is in the format `Accept` prefers, else in the request's,
//! else CBOR, the default and what tresor's own clients send.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
pub use protocol::wire::Format;

/// Both formats, CBOR first (the default).
pub const BOTH: &[Format] = &[Format::Cbor, Format::Json];

/// A request body whose media type is not one the route reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("request body must be {}", names(.expected))]
pub struct UnsupportedMediaType {
    pub expected: &'static [Format],
}

fn names(formats: &[Format]) -> String {
    formats.iter().map(|f| f.media_type()).collect::<Vec<_>>().join(" or ")
}

/// The format of a request body, by its `Content-Type`, if it is one of `accepted`.
pub fn request_format(
    headers: &HeaderMap,
    accepted: &'static [Format],
) -> Result<Format, UnsupportedMediaType> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(Format::of_media_type)
        .filter(|f| accepted.contains(f))
        .ok_or(UnsupportedMediaType { expected: accepted })
}

/// [`request_format`], where a body without `Content-Type` is CBOR: the device API read
/// bodies that way before JSON existed, and its long-deployed clients may not label them.
pub fn request_format_or_cbor(
    headers: &HeaderMap,
    accepted: &'static [Format],
) -> Result<Format, UnsupportedMediaType> {
    if headers.contains_key(header::CONTENT_TYPE) {
        request_format(headers, accepted)
    } else {
        Ok(Format::Cbor)
    }
}

/// The format of the answer: the one of the two that `Accept` prefers (by q-value; a media
/// range with q=0 is refused), else the request body's, else CBOR. Wildcards and other
/// media types leave the choice to the request: an answer is never refused with 406.
pub fn response_format(headers: &HeaderMap, request: Option<Format>) -> Format {
    let default = request.unwrap_or(Format::Cbor);
    let mut quality = [(Format::Cbor, None), (Format::Json, None)];
    for value in headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()) {
        for range in value.split(',') {
            let mut parts = range.split(';');
            let Some(format) = parts.next().and_then(Format::of_media_type) else { continue };
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                .next()
                .unwrap_or(1.0);
            for (f, best) in &mut quality {
                if *f == format {
                    *best = Some(best.map_or(q, |b: f32| b.max(q)));
                }
            }
        }
    }
    match quality {
        [(_, Some(c)), (_, Some(j))] if c > 0.0 || j > 0.0 => {
            if c > j {
                Format::Cbor
            } else if j > c {
                Format::Json
            } else {
                default
            }
        }
        [(_, Some(c)), (_, None)] if c > 0.0 => Format::Cbor,
        [(_, None), (_, Some(j))] if j > 0.0 => Format::Json,
        // Only q=0 ranges: the other format.
        [(_, Some(_)), (_, None)] => Format::Json,
        [(_, None), (_, Some(_))] => Format::Cbor,
        _ => default,
    }
}

/// A `status` answer whose body is `bytes` in `format`.
pub fn respond(status: StatusCode, format: Format, bytes: Vec<u8>) -> Response {
    let mut response = (status, bytes).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(format.media_type()));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(name, HeaderValue::from_static(value));
        }
        h
    }

    #[test]
    fn request_formats() {
        let json = headers(&[(header::CONTENT_TYPE, "application/json; charset=utf-8")]);
        assert_eq!(request_format(&json, BOTH), Ok(Format::Json));
        assert!(request_format(&json, &[Format::Cbor]).is_err());
        let cbor = headers(&[(header::CONTENT_TYPE, "Application/CBOR")]);
        assert_eq!(request_format(&cbor, BOTH), Ok(Format::Cbor));
        assert_eq!(request_format_or_cbor(&HeaderMap::new(), BOTH), Ok(Format::Cbor));
        assert!(
            request_format_or_cbor(&headers(&[(header::CONTENT_TYPE, "text/plain")]), BOTH)
                .is_err()
        );
        for refused in [headers(&[(header::CONTENT_TYPE, "text/plain")]), HeaderMap::new()] {
            let e = request_format(&refused, BOTH).unwrap_err();
            assert_eq!(e.to_string(), "request body must be application/cbor or application/json");
        }
    }

    #[test]
    fn response_formats() {
        let accept = |v: &'static str| headers(&[(header::ACCEPT, v)]);
        assert_eq!(response_format(&HeaderMap::new(), None), Format::Cbor);
        assert_eq!(response_format(&HeaderMap::new(), Some(Format::Json)), Format::Json);
        assert_eq!(response_format(&accept("application/json"), None), Format::Json);
        assert_eq!(response_format(&accept("application/json"), Some(Format::Cbor)), Format::Json);
        assert_eq!(response_format(&accept("application/cbor"), Some(Format::Json)), Format::Cbor);
        assert_eq!(response_format(&accept("*/*"), Some(Format::Json)), Format::Json);
        assert_eq!(
            response_format(&accept("application/cbor;q=0.5, application/json"), None),
            Format::Json
        );
        assert_eq!(
            response_format(&accept("application/cbor, application/json"), Some(Format::Json)),
            Format::Json
        );
        assert_eq!(response_format(&accept("application/cbor;q=0"), None), Format::Json);
        assert_eq!(response_format(&accept("text/html, */*;q=0.8"), None), Format::Cbor);
    }
}
