//! The images in a Venice answer: base64 text decoded to bytes, their type
//! and size read from the bytes' own header (PNG IHDR, WebP VP8/VP8L/VP8X,
//! JPEG SOF) rather than trusted from the request, so `ai_assets` records
//! what was actually stored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// One decoded image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The image file's bytes.
    pub bytes: Vec<u8>,
    /// Its media type (`image/png`, `image/webp`, `image/jpeg`).
    pub mime: &'static str,
    /// File extension for the object key.
    pub extension: &'static str,
    /// Width in pixels, from the header.
    pub width: u32,
    /// Height in pixels, from the header.
    pub height: u32,
}

/// Decodes one entry of Venice's `images` array. Venice sends plain
/// base64; a `data:image/...;base64,` prefix (the OpenAI-compatible
/// endpoint's `url` form) is accepted too.
pub fn decode(encoded: &str) -> Result<Image, String> {
    let text = match encoded.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => encoded,
    };
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| format!("an image is not valid base64: {e}"))?;
    identify(bytes)
}

/// Reads type and dimensions from the header of `bytes`.
pub fn identify(bytes: Vec<u8>) -> Result<Image, String> {
    let kind = imagesize::image_type(&bytes)
        .map_err(|e| format!("an image has no readable header: {e}"))?;
    let (mime, extension) = match kind {
        imagesize::ImageType::Png => ("image/png", "png"),
        imagesize::ImageType::Webp => ("image/webp", "webp"),
        imagesize::ImageType::Jpeg => ("image/jpeg", "jpg"),
        other => return Err(format!("an image is {other:?}, not PNG, WebP or JPEG")),
    };
    let size = imagesize::blob_size(&bytes)
        .map_err(|e| format!("an image's size cannot be read from its header: {e}"))?;
    let width = u32::try_from(size.width).unwrap_or(0);
    let height = u32::try_from(size.height).unwrap_or(0);
    if width == 0 || height == 0 {
        return Err(format!("an image's header says {width}x{height}"));
    }
    Ok(Image {
        bytes,
        mime,
        extension,
        width,
        height,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PNG signature and IHDR chunk for a `w`x`h` image (enough header
    /// for the size; the CRC is not checked by a size probe).
    fn png_header(w: u32, h: u32) -> Vec<u8> {
        let mut bytes = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
        bytes.extend_from_slice(&w.to_be_bytes());
        bytes.extend_from_slice(&h.to_be_bytes());
        bytes.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
        bytes
    }

    #[test]
    fn a_png_header_gives_type_and_size() {
        let encoded = STANDARD.encode(png_header(640, 480));
        let image = decode(&encoded).unwrap();
        assert_eq!(
            (image.mime, image.extension, image.width, image.height),
            ("image/png", "png", 640, 480)
        );
    }

    #[test]
    fn a_data_url_prefix_is_accepted() {
        let encoded = format!(
            "data:image/png;base64,{}",
            STANDARD.encode(png_header(3, 5))
        );
        assert_eq!(decode(&encoded).unwrap().height, 5);
    }

    #[test]
    fn a_lossless_webp_header_gives_its_size() {
        // RIFF....WEBPVP8L, size, signature 0x2f, then 14-bit width-1 and height-1.
        let (w, h) = (300u32, 200u32);
        let packed = (w - 1) | ((h - 1) << 14);
        let mut bytes = b"RIFF\x00\x00\x00\x00WEBPVP8L\x00\x00\x00\x00\x2f".to_vec();
        bytes.extend_from_slice(&packed.to_le_bytes());
        bytes.extend_from_slice(&[0; 8]);
        let image = identify(bytes).unwrap();
        assert_eq!(
            (image.mime, image.width, image.height),
            ("image/webp", 300, 200)
        );
    }

    #[test]
    fn not_an_image_is_refused_with_a_reason() {
        assert!(decode("not base64 !!").unwrap_err().contains("base64"));
        let gif = STANDARD.encode(b"GIF89a\x01\x00\x01\x00\x00\x00\x00");
        assert!(decode(&gif).unwrap_err().contains("not PNG"));
        let text = STANDARD.encode(b"hello, this is text and no image at all");
        assert!(decode(&text).is_err());
    }
}
