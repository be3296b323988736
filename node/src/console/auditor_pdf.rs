//! The subject-access report as a PDF (pdf-writer), in the operator's
//! language. Latin text is set in Helvetica and Chinese in STSong-Light
//! with the `UniGB-UCS2-H` encoding: both are standard fonts a PDF names
//! without embedding (Acrobat's Asian font pack, pdfium, poppler with its
//! data, Preview), so no font file is shipped and the report stays small.
//! Each line is split into runs of ASCII and of other characters; a
//! character outside the Basic Multilingual Plane is shown as `?`.

use pdf_writer::types::{CidFontType, FontFlags, SystemInfo};
use pdf_writer::{Content, Finish, Name, Pdf, Rect, Ref, Str, TextStr};

use super::subject::{SubjectReport, SubjectRow};
use crate::console::i18n::Catalogue;

/// A4 portrait, in points.
const PAGE_WIDTH_PT: f32 = 595.0;
const PAGE_HEIGHT_PT: f32 = 842.0;
const MARGIN_PT: f32 = 50.0;
const TITLE_SIZE_PT: f32 = 16.0;
const TEXT_SIZE_PT: f32 = 10.0;
const LINE_PT: f32 = 15.0;
/// Helvetica's average advance, as a share of the size (for wrapping).
const LATIN_ADVANCE_EM: f32 = 0.56;

/// The Latin font's resource name.
const LATIN: Name<'static> = Name(b"F1");
/// The Chinese font's resource name.
const CHINESE: Name<'static> = Name(b"F2");

/// One line to set: its text, size and indent.
struct Line {
    text: String,
    size: f32,
    indent: f32,
}

/// The report as PDF bytes.
pub(super) fn subject_pdf(t: &Catalogue, report: &SubjectReport) -> Vec<u8> {
    let lines = report_lines(t, report);
    let usable = PAGE_HEIGHT_PT - 2.0 * MARGIN_PT;
    let per_page = ((usable / LINE_PT) as usize).max(1);
    let pages: Vec<&[Line]> = lines.chunks(per_page).collect();
    let (catalog, tree, latin, chinese, cid, descriptor, info) =
        (Ref::new(1), Ref::new(2), Ref::new(3), Ref::new(4), Ref::new(5), Ref::new(6), Ref::new(7));
    let page_ids: Vec<(Ref, Ref)> =
        (0..pages.len() as i32).map(|i| (Ref::new(8 + 2 * i), Ref::new(9 + 2 * i))).collect();
    let mut pdf = Pdf::new();
    pdf.catalog(catalog).pages(tree);
    pdf.pages(tree).kids(page_ids.iter().map(|(page, _)| *page)).count(page_ids.len() as i32);
    pdf.document_info(info).title(TextStr(t.get("subject.pdf-title"))).producer(TextStr("civmesh"));
    pdf.type1_font(latin).base_font(Name(b"Helvetica")).encoding_predefined(Name(b"WinAnsiEncoding"));
    pdf.type0_font(chinese)
        .base_font(Name(b"STSong-Light-UniGB-UCS2-H"))
        .encoding_predefined(Name(b"UniGB-UCS2-H"))
        .descendant_font(cid);
    pdf.cid_font(cid)
        .subtype(CidFontType::Type0)
        .base_font(Name(b"STSong-Light"))
        .system_info(SystemInfo { registry: Str(b"Adobe"), ordering: Str(b"GB1"), supplement: 2 })
        .font_descriptor(descriptor)
        .default_width(1000.0);
    pdf.font_descriptor(descriptor)
        .name(Name(b"STSong-Light"))
        .flags(FontFlags::SERIF | FontFlags::SYMBOLIC)
        .bbox(Rect::new(-25.0, -254.0, 1000.0, 880.0))
        .italic_angle(0.0)
        .ascent(880.0)
        .descent(-120.0)
        .cap_height(880.0)
        .stem_v(93.0);
    for (lines, (page_id, content_id)) in pages.iter().zip(&page_ids) {
        let mut page = pdf.page(*page_id);
        page.parent(tree).media_box(Rect::new(0.0, 0.0, PAGE_WIDTH_PT, PAGE_HEIGHT_PT)).contents(*content_id);
        page.resources().fonts().pair(LATIN, latin).pair(CHINESE, chinese);
        page.finish();
        pdf.stream(*content_id, &page_content(lines));
    }
    pdf.finish()
}

/// The content stream setting `lines` from the top margin down.
fn page_content(lines: &[Line]) -> Vec<u8> {
    let mut content = Content::new();
    let mut y = PAGE_HEIGHT_PT - MARGIN_PT;
    for line in lines {
        content.begin_text();
        content.next_line(MARGIN_PT + line.indent, y);
        for (latin, run) in runs(&line.text) {
            if latin {
                content.set_font(LATIN, line.size);
                content.show(Str(run.as_bytes()));
            } else {
                content.set_font(CHINESE, line.size);
                content.show(Str(&ucs2(&run)));
            }
        }
        content.end_text();
        y -= LINE_PT;
    }
    content.finish().to_vec()
}

/// `text` as runs of printable ASCII (true) and of other characters.
fn runs(text: &str) -> Vec<(bool, String)> {
    let mut runs: Vec<(bool, String)> = Vec::new();
    for c in text.chars() {
        let latin = c == ' ' || c.is_ascii_graphic();
        match runs.last_mut() {
            Some((kind, run)) if *kind == latin => run.push(c),
            _ => runs.push((latin, c.to_string())),
        }
    }
    runs
}

/// UCS-2, big-endian: what `UniGB-UCS2-H` reads.
fn ucs2(text: &str) -> Vec<u8> {
    text.chars().flat_map(|c| u16::try_from(u32::from(c)).unwrap_or(u16::from(b'?')).to_be_bytes()).collect()
}

/// How wide `text` sets at `size`, roughly (for wrapping).
fn width(text: &str, size: f32) -> f32 {
    text.chars().map(|c| if c.is_ascii() { LATIN_ADVANCE_EM } else { 1.0 }).sum::<f32>() * size
}

/// Adds `text` as lines no wider than the page, breaking between characters.
fn push_wrapped(lines: &mut Vec<Line>, text: &str, size: f32, indent: f32) {
    let room = PAGE_WIDTH_PT - 2.0 * MARGIN_PT - indent;
    let mut current = String::new();
    for c in text.chars() {
        current.push(c);
        if width(&current, size) > room {
            current.pop();
            lines.push(Line { text: std::mem::take(&mut current), size, indent });
            current.push(c);
        }
    }
    lines.push(Line { text: current, size, indent });
}

/// The report's lines: the heading, then each access in two or more lines.
fn report_lines(t: &Catalogue, report: &SubjectReport) -> Vec<Line> {
    let mut lines =
        vec![Line { text: t.get("subject.pdf-title").to_string(), size: TITLE_SIZE_PT, indent: 0.0 }];
    let heading = [
        format!("{}: {}", t.get("subject.federation"), report.federation),
        format!("{}: {}", t.get("subject.dataset"), report.dataset),
        format!("{}: {}", t.get("subject.record-key"), report.record_key),
        format!("{}: {}", t.get("subject.generated-at"), report.generated_at),
        format!("{} {} / {}", t.get("subject.complete-up-to"), report.anchored_leaves, report.leaves),
        format!("{}: {}", t.get("subject.caption"), report.rows.len()),
    ];
    for text in heading {
        push_wrapped(&mut lines, &text, TEXT_SIZE_PT, 0.0);
    }
    if report.rows.is_empty() {
        push_wrapped(&mut lines, t.get("subject.none"), TEXT_SIZE_PT, 0.0);
    }
    for (index, row) in report.rows.iter().enumerate() {
        lines.push(Line { text: String::new(), size: TEXT_SIZE_PT, indent: 0.0 });
        for (number, text) in access_lines(t, row).into_iter().enumerate() {
            let text = if number == 0 { format!("{}. {text}", index + 1) } else { text };
            push_wrapped(&mut lines, &text, TEXT_SIZE_PT, if number == 0 { 0.0 } else { 14.0 });
        }
    }
    lines.push(Line { text: String::new(), size: TEXT_SIZE_PT, indent: 0.0 });
    push_wrapped(&mut lines, t.get("subject.pdf-note"), TEXT_SIZE_PT, 0.0);
    lines
}

/// One access: who and when, then what, why and how.
fn access_lines(t: &Catalogue, row: &SubjectRow) -> Vec<String> {
    let basis = row.basis_key.map(|key| t.get(key)).unwrap_or_default();
    let anchored = t.get(if row.anchored { "subject.yes" } else { "subject.no" });
    vec![
        format!(
            "{}  {}: {}  {}: {}",
            row.when,
            t.get("subject.requester"),
            row.requester,
            t.get("subject.owner"),
            row.owner
        ),
        format!("{}: {}", t.get("subject.fields"), if row.fields.is_empty() { "-" } else { &row.fields }),
        format!(
            "{}: {}  {}: {}  {}: {}",
            t.get("subject.purpose"),
            row.purpose,
            t.get("subject.grant"),
            if row.grant.is_empty() { "-" } else { &row.grant },
            t.get("subject.basis"),
            basis
        ),
        format!(
            "{}: {}  {}: {}  {}: {}  #{}",
            t.get("subject.outcome"),
            t.get(row.outcome_key),
            t.get("subject.kind"),
            t.get(row.kind_key),
            t.get("subject.anchored"),
            anchored,
            row.entry
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_into_latin_and_chinese_runs_in_ucs2() {
        assert_eq!(
            runs("字段: name, 街道"),
            [(false, "字段".to_string()), (true, ": name, ".to_string()), (false, "街道".to_string())]
        );
        assert_eq!(ucs2("审计"), [0x5b, 0xa1, 0x8b, 0xa1]);
        assert_eq!(ucs2("😀"), [0, b'?']);
        let mut lines = Vec::new();
        push_wrapped(&mut lines, &"字".repeat(100), TEXT_SIZE_PT, 0.0);
        assert!(lines.len() == 3 && lines.iter().all(|line| width(&line.text, TEXT_SIZE_PT) <= 495.0));
    }

    #[test]
    fn a_report_is_a_pdf_naming_each_access_in_both_fonts() {
        let report = SubjectReport {
            dataset: "market-supervision/enterprise-registry".into(),
            record_key: "913101000000000001".into(),
            federation: "city".into(),
            generated_at: "2026-12-04T10:00:00+08:00".into(),
            rows: (0..80)
                .map(|entry| SubjectRow {
                    entry,
                    when: "2026-12-04T09:00:00+08:00".into(),
                    requester: "street/jingansi".into(),
                    owner: "dept/market-supervision".into(),
                    fields: "name, street".into(),
                    purpose: "street-inspection".into(),
                    grant: "#1".into(),
                    basis_key: Some("audit.basis-statutory-duty"),
                    outcome_key: "subject.outcome-permit",
                    kind_key: "subject.kind-listing",
                    anchored: entry < 40,
                })
                .collect(),
            anchored_leaves: 40,
            leaves: 80,
        };
        let t = crate::console::i18n::catalogue(crate::console::i18n::Lang::ZhCn);
        let pdf = subject_pdf(t, &report);
        assert!(pdf.starts_with(b"%PDF-"));
        let has = |needle: &[u8]| pdf.windows(needle.len()).any(|window| window == needle);
        assert!(has(b"/STSong-Light") && has(b"/UniGB-UCS2-H") && has(b"/Helvetica"));
        assert!(has(b"street/jingansi") && has(b"913101000000000001"));
        let label = hex::encode(ucs2(t.get("subject.requester")));
        let lower = pdf.to_ascii_lowercase();
        assert!(
            lower.windows(label.len()).any(|window| window == label.as_bytes()),
            "the Chinese labels, in UCS-2"
        );
        let pages = pdf.windows(b"/Type /Page\n".len()).filter(|window| *window == b"/Type /Page\n").count();
        assert!(pages >= 6, "80 accesses of 5 lines take several pages: {pages}");
    }
}
