//! The generic part of reading a request target: its path split into percent-decoded
//! segments, and its query string into percent-decoded `key=value` pairs.
//!
//! What the segments and parameters mean is the routes' business; a target that cannot be
//! read is refused here with 400, whatever the route.

use super::error::ApiError;

/// The `key=value` pairs of a query string, percent-decoded; a key given twice (also
/// spelt differently, `a` and `%61`) is refused on every route: which one would count is
/// anybody's guess, and a proxy or cache in front may have guessed differently.
pub(super) fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ApiError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if pairs.iter().any(|(seen, _)| *seen == key) {
            return Err(ApiError::new(
                400,
                format!("query parameter {key:?} given more than once"),
            ));
        }
        pairs.push((key, percent_decode(value)?));
    }
    Ok(pairs)
}

/// Splits a path into percent-decoded segments; `/a/b` gives `["a", "b"]`.
pub(super) fn split_path(path: &str) -> Result<Vec<String>, ApiError> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| ApiError::new(400, "the request path must start with /"))?;
    // Sized up front: a vector grown by `collect` is reallocated on every request.
    let mut segments = Vec::with_capacity(rest.matches('/').count() + 1);
    for segment in rest.split('/') {
        segments.push(percent_decode(segment)?);
    }
    Ok(segments)
}

fn percent_decode(text: &str) -> Result<String, ApiError> {
    let bad = || ApiError::new(400, "malformed percent-encoding in the request target");
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::new(400, "the request target is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_and_decode() {
        assert_eq!(split_path("/galaxies/a%2Db").unwrap(), ["galaxies", "a-b"]);
        assert_eq!(split_path("/").unwrap(), [""]);
        assert!(split_path("/x%zz").is_err());
        assert!(split_path("/x%4").is_err());
        assert!(split_path("/x%ff").is_err(), "not UTF-8");
        assert!(split_path("galaxies").is_err());
        assert_eq!(percent_decode("%00").unwrap(), "\0");
    }
}
