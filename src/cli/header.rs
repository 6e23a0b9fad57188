//! `--header Name:Value`: default response headers, as uvicorn's option.

/// `Name:Value` split as uvicorn splits it (at the first colon), the spaces around the
/// value trimmed.
pub fn parse(text: &str) -> Result<(http::HeaderName, http::HeaderValue), String> {
    let bad = |why: &str| format!("--header {text:?}: {why}");
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| bad("expected Name:Value"))?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| bad("not a valid header name"))?;
    let value = http::HeaderValue::from_str(value.trim())
        .map_err(|_| bad("the value has characters a header can't carry"))?;
    Ok((name, value))
}
