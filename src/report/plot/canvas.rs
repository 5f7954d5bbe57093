//! The PNG output: an RGB drawing surface for plotters, drawn at
//! `SUPERSAMPLE` times the chart size, averaged down and encoded.

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters_backend::{BackendColor, BackendCoord, BackendTextStyle, DrawingErrorKind};

use super::draw::{Draw, Px, register_embedded_font};
use super::{HEIGHT, WIDTH};

/// The PNG is drawn this many times larger, then averaged down.
const SUPERSAMPLE: u32 = 2;

pub(super) fn render_png(chart: &impl Draw) -> Vec<u8> {
    register_embedded_font();
    let (f, w, h) = (SUPERSAMPLE as usize, WIDTH as usize, HEIGHT as usize);
    let mut canvas = Canvas {
        size: (WIDTH * SUPERSAMPLE, HEIGHT * SUPERSAMPLE),
        rgb: vec![255; w * f * h * f * 3],
    };
    {
        let root = (&mut canvas).into_drawing_area();
        let _ = chart.draw(&root, Px(SUPERSAMPLE as f64));
    }
    let big = canvas.rgb;
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let at = |dy: usize, dx: usize| big[((y * f + dy) * w * f + x * f + dx) * 3 + c];
                let sum: usize = (0..f * f).map(|i| at(i / f, i % f) as usize).sum();
                rgb.push(((sum + f * f / 2) / (f * f)) as u8);
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(png::Compression::High);
    let written = enc
        .write_header()
        .and_then(|mut wr| wr.write_image_data(&rgb).and_then(|_| wr.finish()));
    written.expect("encoding an image of the declared size into memory");
    out
}

/// An RGB image for plotters to draw on: plotters rasterises shapes, and
/// ab_glyph rasterises text, into covered pixels; this blends them in.
struct Canvas {
    size: (u32, u32),
    rgb: Vec<u8>,
}

impl DrawingBackend for &mut Canvas {
    type ErrorType = std::convert::Infallible;

    fn get_size(&self) -> (u32, u32) {
        self.size
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        Ok(())
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        Ok(())
    }

    fn draw_pixel(
        &mut self,
        (x, y): BackendCoord,
        c: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let (w, h) = self.size;
        if x >= 0 && y >= 0 && (x as u32) < w && (y as u32) < h {
            let i = (y as usize * w as usize + x as usize) * 3;
            let a = c.alpha.clamp(0.0, 1.0);
            for (old, new) in self.rgb[i..i + 3]
                .iter_mut()
                .zip([c.rgb.0, c.rgb.1, c.rgb.2])
            {
                let v = f64::from(*old) + (f64::from(new) - f64::from(*old)) * a;
                *old = v.round() as u8;
            }
        }
        Ok(())
    }

    /// As plotters' default, but 0.2 x size lower: plotters' ab_glyph text
    /// sits that much above its layout box, so centred labels rose above
    /// their ticks; this centres digits on them as the SVG does.
    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        (x, y): BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        let font_err = |e: S::FontError| DrawingErrorKind::FontError(Box::new(e));
        let ((x0, y0), (x1, y1)) = style.layout_box(text).map_err(font_err)?;
        let (dx, dy) = anchor_offset(style.anchor(), x1 - x0, y1 - y0);
        let dy = dy + (style.size() * 0.2).round() as i32;
        let t = style.transform();
        let drawn = style.draw(text, (0, 0), |gx, gy, c| {
            let (px, py) = t.transform(gx + dx - x0, gy + dy - y0);
            self.draw_pixel((x + px, y + py), c)
        });
        drawn.map_err(font_err)?
    }
}

/// From a text's anchor to the top left of its `w` x `h` box.
pub(super) fn anchor_offset(pos: Pos, w: i32, h: i32) -> (i32, i32) {
    let dx = match pos.h_pos {
        HPos::Left => 0,
        HPos::Center => -w / 2,
        HPos::Right => -w,
    };
    let dy = match pos.v_pos {
        VPos::Top => 0,
        VPos::Center => -h / 2,
        VPos::Bottom => -h,
    };
    (dx, dy)
}
