//! The correction loop in the console, in a real browser (headless
//! Chromium over WebDriver) against a real federation: a street worker
//! (李伟, Jing'an Temple street) lists the enterprises in her street, opens
//! one, corrects its operating address with a photo uploaded from the
//! browser and sees it delivered; the market department's reviewer sees it
//! in the inbox with the photo and the changed field highlighted and
//! accepts it; the street worker sees it applied with the new version, on
//! the correction's page and on the record's. Also: a file that is not an
//! image (named .png) is refused next to the photo field and nothing is
//! kept; a rejection without a reason is refused next to the reason; two
//! identical corrections are accepted at once; an auto-accept rule is added
//! and removed. Screenshots of each page, in Chinese and English, go to
//! `$CARGO_TARGET_DIR/console-screenshots/`.

#![allow(clippy::too_many_lines)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use civmesh_testnet::city::{enterprises_on, ENTERPRISES};
use civmesh_tests::browser::{
    click, fill, has, screenshot, select, text, texts, ConsoleNet, ENTERPRISE_COUNT, JINGANSI, MARKET,
};
use fantoccini::{Client, Locator};
use serde_json::Value;

const NEW_ADDRESS: &str = "88 Yanping Road";
const SAME_ADDRESS: &str = "1 Changping Road";

/// A real PNG, `width` × `height`, RGB, stored (uncompressed) deflate.
fn png(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &byte in bytes {
            crc ^= u32::from(byte);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // no filter
        for x in 0..width {
            raw.extend([200, (x * 30) as u8, (y * 40) as u8]);
        }
    }
    let length = raw.len() as u16;
    let mut zlib = vec![0x78, 0x01, 0x01];
    zlib.extend(length.to_le_bytes());
    zlib.extend((!length).to_le_bytes());
    zlib.extend(&raw);
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut header = Vec::new();
    header.extend(width.to_be_bytes());
    header.extend(height.to_be_bytes());
    header.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Reloads `url` until `css` is on the page (30 s at most).
async fn wait_for(client: &Client, url: &str, css: &str) {
    let start = Instant::now();
    loop {
        client.goto(url).await.unwrap();
        if has(client, css).await {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{css} never appeared at {url}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Opens record `key` from the listing of her street (its row's button:
/// element ids carry the row's place, never the key).
async fn open_record(client: &Client, base: &str, key: &str) {
    client.goto(&format!("{base}/records")).await.unwrap();
    click(client, "#list").await;
    let row = texts(client, "#records td.key").await.iter().position(|listed| listed == key);
    let row = row.unwrap_or_else(|| panic!("the record is not on the first page"));
    click(client, &format!("#open-{row}")).await;
}

/// The correction id the page's path names (`/corrections/{id}`).
async fn correction_in_path(client: &Client) -> String {
    let url = client.current_url().await.unwrap();
    assert!(url.query().is_none(), "nothing but the id in the URL");
    url.path()
        .strip_prefix("/corrections/")
        .unwrap_or_else(|| panic!("not a correction page: {url}"))
        .to_string()
}

/// The image's natural width once it has loaded (0 if it never does).
async fn natural_width(client: &Client, css: &str) -> u64 {
    let script = format!(
        "const img = document.querySelector('{css}'); return img && img.complete ? img.naturalWidth : -1;"
    );
    for _ in 0..50 {
        let width = client.execute(&script, vec![]).await.unwrap();
        if width.as_i64().is_some_and(|width| width >= 0) {
            return width.as_u64().unwrap_or(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    0
}

/// The corrections at `node`, through its API.
fn corrections_at(console: &ConsoleNet, node: usize) -> Vec<Value> {
    console.net.api(node).unwrap().get("/v1/corrections").unwrap()
}

/// The correction `civmesh correction submit` made at the street (not waiting).
fn submit_by_cli(console: &ConsoleNet, key: &str, address: &str) -> String {
    let change = format!("operating_address={address}");
    let submitted = console.net.submit_correction(JINGANSI, key, 1, &[&change], 0, &[]).unwrap();
    submitted["correction"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_correction_goes_from_the_street_to_the_reviewer_and_back_in_a_real_browser() {
    let console = ConsoleNet::launch();
    let (street_base, market_base) = (console.base(JINGANSI), console.base(MARKET));
    let street = console.browser().await;
    console.enrol(&street, JINGANSI, "李伟", "street-worker", "jingansi-2026").await;
    let reviewer = console.browser().await;
    console.enrol(&reviewer, MARKET, "王芳", "reviewer", "market-review-2026").await;
    let keys = enterprises_on("jingansi", ENTERPRISE_COUNT);

    // (a) She opens an enterprise of her street from the listing: the
    // owner releases it under her grant, with its version; the key is in
    // no URL.
    open_record(&street, &street_base, &keys[0]).await;
    let url = street.current_url().await.unwrap();
    assert_eq!((url.path(), url.query()), ("/records/open", None));
    assert_eq!(text(&street, "#record-key").await, keys[0]);
    assert_eq!(text(&street, "#record-version").await, "1");
    let old_address = text(&street, "#current-operating_address").await;
    assert!(!old_address.is_empty() && old_address != NEW_ADDRESS);
    assert!(text(&street, "#record-fields").await.contains("主键不可更正"), "the key is not editable");
    assert!(!has(&street, "#new-credit_code").await && !has(&street, "#new-legal_rep_phone").await);
    assert!(has(&street, "#history-empty").await);
    screenshot(&street, "record-zh").await;

    // A text file named .png is refused by its content, next to the photo
    // field, and nothing is kept.
    let fake = console.dir.path().join("not-a-photo.png");
    std::fs::write(&fake, "this is text, not a photo").unwrap();
    fill(&street, "#new-operating_address", NEW_ADDRESS).await;
    fill(&street, "#reason", "经营地址与登记不符").await;
    street.find(Locator::Css("#photos")).await.unwrap().send_keys(fake.to_str().unwrap()).await.unwrap();
    click(&street, "#submit-correction").await;
    assert!(text(&street, "#photos-error").await.contains("不是图片"));
    let described =
        street.find(Locator::Css("#photos")).await.unwrap().attr("aria-describedby").await.unwrap();
    assert!(described.unwrap_or_default().contains("photos-error"));
    assert_eq!(
        street
            .find(Locator::Css("#new-operating_address"))
            .await
            .unwrap()
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(NEW_ADDRESS),
        "what she typed is kept on the page"
    );
    assert!(corrections_at(&console, JINGANSI).is_empty(), "no correction was made");
    assert!(text(&street, "#form-errors").await.contains("未提交"));
    street.execute("document.querySelector('#photos-error').scrollIntoView()", vec![]).await.unwrap();
    screenshot(&street, "record-photo-refused-zh").await;
    // A photo over the node's bound (20 MiB) is refused next to the field too.
    let huge = console.dir.path().join("huge.png");
    let mut huge_bytes = png(8, 6);
    huge_bytes.resize((20 << 20) + 1, 0);
    std::fs::write(&huge, huge_bytes).unwrap();
    street.find(Locator::Css("#photos")).await.unwrap().send_keys(huge.to_str().unwrap()).await.unwrap();
    click(&street, "#submit-correction").await;
    assert!(text(&street, "#photos-error").await.contains("超过大小上限"));
    assert!(corrections_at(&console, JINGANSI).is_empty());
    // No reason: refused next to the reason field.
    fill(&street, "#reason", "").await;
    click(&street, "#submit-correction").await;
    assert_eq!(text(&street, "#reason-error").await, "请填写更正理由。");
    assert!(corrections_at(&console, JINGANSI).is_empty());

    // Now with a real photo: the correction's page, delivered to the owner.
    open_record(&street, &street_base, &keys[0]).await;
    let photo = console.dir.path().join("shop-sign.png");
    std::fs::write(&photo, png(8, 6)).unwrap();
    fill(&street, "#new-operating_address", NEW_ADDRESS).await;
    fill(&street, "#reason", "经营地址与登记不符").await;
    fill(&street, "#evidence", "现场检查：门牌已更换").await;
    street.find(Locator::Css("#photos")).await.unwrap().send_keys(photo.to_str().unwrap()).await.unwrap();
    click(&street, "#submit-correction").await;
    let id = correction_in_path(&street).await;
    assert_eq!(text(&street, "#photo-count").await, "1");
    wait_for(&street, &format!("{street_base}/corrections/{id}"), "#step-delivered.done").await;
    assert!(text(&street, "#step-submitted").await.contains("完成"));
    screenshot(&street, "correction-delivered-zh").await;

    // (b) The reviewer finds it in the inbox, with the photo and the
    // changed field marked (a class and words), and accepts it.
    wait_for(&reviewer, &format!("{market_base}/review"), &format!("#review-{id}")).await;
    assert!(text(&reviewer, "#inbox").await.contains("street/jingansi"));
    screenshot(&reviewer, "review-inbox-zh").await;
    click(&reviewer, &format!("#review-{id}")).await;
    assert_eq!(text(&reviewer, "#review-key").await, keys[0]);
    assert!(text(&reviewer, "#review-submitter").await.contains("street/jingansi"));
    assert_eq!(text(&reviewer, "#review-reason").await, "经营地址与登记不符");
    assert_eq!(natural_width(&reviewer, "#photo-0").await, 8, "the photo loads");
    let changed = reviewer.find(Locator::Css("#proposal-operating_address")).await.unwrap();
    assert_eq!(changed.attr("class").await.unwrap().as_deref(), Some("changed"));
    let row = changed.text().await.unwrap();
    assert!(row.contains("【已修改】") && row.contains(NEW_ADDRESS) && row.contains(&old_address), "{row}");
    let unchanged = reviewer.find(Locator::Css("#proposal-name")).await.unwrap();
    assert_eq!(unchanged.attr("class").await.unwrap(), None);
    screenshot(&reviewer, "review-zh").await;
    reviewer.execute("document.querySelector('#photo-0').scrollIntoView()", vec![]).await.unwrap();
    screenshot(&reviewer, "review-photo-zh").await;
    click(&reviewer, "#accept").await;
    assert_eq!(reviewer.current_url().await.unwrap().path(), format!("/review/{id}"));
    assert!(text(&reviewer, "#review-state").await.contains("已采纳"));
    assert!(text(&reviewer, "#review-state").await.contains("王芳"));
    assert!(!has(&reviewer, "#accept").await);

    // (c) The street worker sees it applied, with the new version: a new
    // outcome in her list (once), the timeline, and the record itself.
    wait_for(&street, &format!("{street_base}/corrections/{id}"), "#step-applied.done").await;
    assert_eq!(text(&street, "#correction-state").await, "已采纳");
    assert_eq!(text(&street, "#new-version").await, "2");
    assert!(text(&street, "#step-applied").await.contains("新版本: 2"));
    screenshot(&street, "correction-applied-zh").await;
    street.goto(&format!("{street_base}/corrections")).await.unwrap();
    assert_eq!(text(&street, "#unseen").await, "1");
    assert!(text(&street, "#corrections").await.contains("已采纳"));
    screenshot(&street, "corrections-zh").await;
    street.goto(&format!("{street_base}/corrections")).await.unwrap();
    assert!(!has(&street, "#unseen").await, "seen now");
    street.goto(&format!("{street_base}/corrections/{id}")).await.unwrap();
    click(&street, "#open-record").await;
    assert_eq!(text(&street, "#record-version").await, "2");
    assert_eq!(text(&street, "#current-operating_address").await, NEW_ADDRESS);
    assert!(text(&street, "#history").await.contains("已采纳"));
    screenshot(&street, "record-history-zh").await;

    // A rejection needs a reason, next to its field; with one, the street
    // sees it.
    let rejected = submit_by_cli(&console, &keys[1], "2 Nowhere Road");
    wait_for(&reviewer, &format!("{market_base}/review/{rejected}"), "#reject").await;
    click(&reviewer, "#reject").await;
    assert_eq!(text(&reviewer, "#reject-reason-error").await, "驳回须填写理由。");
    let described =
        reviewer.find(Locator::Css("#reject-reason")).await.unwrap().attr("aria-describedby").await.unwrap();
    assert_eq!(described.as_deref(), Some("reject-reason-error"));
    assert!(has(&reviewer, "#accept").await, "still awaiting review");
    screenshot(&reviewer, "review-reject-refused-zh").await;
    fill(&reviewer, "#reject-reason", "地址无法核实").await;
    click(&reviewer, "#reject").await;
    assert!(text(&reviewer, "#review-state").await.contains("已驳回"));
    wait_for(&street, &format!("{street_base}/corrections/{rejected}"), "#step-rejected").await;
    assert!(text(&street, "#step-rejected").await.contains("地址无法核实"));
    screenshot(&street, "correction-rejected-zh").await;

    // Two identical corrections (same change, two enterprises), accepted at once.
    let same =
        [submit_by_cli(&console, &keys[2], SAME_ADDRESS), submit_by_cli(&console, &keys[3], SAME_ADDRESS)];
    for id in &same {
        wait_for(&reviewer, &format!("{market_base}/review"), &format!("#review-{id}")).await;
    }
    assert!(text(&reviewer, "#groups").await.contains(SAME_ADDRESS));
    assert!(text(&reviewer, "#bulk-accept-0").await.contains("(2)"));
    screenshot(&reviewer, "review-inbox-groups-zh").await;
    click(&reviewer, "#bulk-accept-0").await;
    assert_eq!(text(&reviewer, "#bulk-done").await, "已接受: 2");
    assert!(has(&reviewer, "#inbox-empty").await);
    for key in &keys[2..4] {
        let history = console.net.record_history(MARKET, ENTERPRISES, key).unwrap();
        assert_eq!(history.len(), 2, "a new version of {key}");
    }

    // An auto-accept rule: a rule without fields is refused next to them;
    // one with a field is listed, then removed.
    reviewer.goto(&format!("{market_base}/review/rules")).await.unwrap();
    assert!(has(&reviewer, "#rules-empty").await);
    select(&reviewer, "#submitter-0", "street/jingansi").await;
    click(&reviewer, "#add-rule-submit-0").await;
    assert_eq!(text(&reviewer, "#fields-error-0").await, "请至少勾选一个字段。");
    civmesh_tests::browser::tick(&reviewer, "#rule-0-operating_address").await;
    select(&reviewer, "#submitter-0", "street/jingansi").await;
    click(&reviewer, "#add-rule-submit-0").await;
    assert_eq!(texts(&reviewer, "#rules .rule-submitter").await, ["street/jingansi"]);
    assert_eq!(texts(&reviewer, "#rules .rule-fields").await, ["operating_address"]);
    screenshot(&reviewer, "rules-zh").await;
    click(&reviewer, "#remove-rule-0").await;
    assert!(has(&reviewer, "#rules-empty").await);

    // A street worker may not open the reviewer's pages.
    for path in ["/review", "/review/rules", &format!("/review/{id}"), &format!("/review/{id}/photos/0")] {
        street.goto(&format!("{street_base}{path}")).await.unwrap();
        assert_eq!(text(&street, "#error").await, "您的角色无权访问此页面。", "{path}");
    }

    // The same pages in English.
    for client in [&street, &reviewer] {
        click(client, "#switch-lang").await;
    }
    open_record(&street, &street_base, &keys[0]).await;
    assert!(text(&street, "#record-fields").await.contains("The key cannot be corrected"));
    screenshot(&street, "record-en").await;
    fill(&street, "#new-name", "").await;
    street.find(Locator::Css("#photos")).await.unwrap().send_keys(fake.to_str().unwrap()).await.unwrap();
    click(&street, "#submit-correction").await;
    assert!(text(&street, "#photos-error").await.contains("not an image"));
    assert_eq!(text(&street, "#reason-error").await, "Give the reason for the correction.");
    street.execute("document.querySelector('#photos-error').scrollIntoView()", vec![]).await.unwrap();
    screenshot(&street, "record-photo-refused-en").await;
    street.goto(&format!("{street_base}/corrections/{id}")).await.unwrap();
    assert_eq!(text(&street, "#correction-state").await, "Applied");
    screenshot(&street, "correction-applied-en").await;
    street.goto(&format!("{street_base}/corrections/{rejected}")).await.unwrap();
    screenshot(&street, "correction-rejected-en").await;
    street.goto(&format!("{street_base}/corrections")).await.unwrap();
    screenshot(&street, "corrections-en").await;
    let pending = submit_by_cli(&console, &keys[4], "3 Kangding Road");
    wait_for(&reviewer, &format!("{market_base}/review"), &format!("#review-{pending}")).await;
    screenshot(&reviewer, "review-inbox-en").await;
    reviewer.goto(&format!("{market_base}/review/{pending}")).await.unwrap();
    click(&reviewer, "#reject").await;
    assert_eq!(text(&reviewer, "#reject-reason-error").await, "A rejection needs a reason.");
    screenshot(&reviewer, "review-reject-refused-en").await;
    reviewer.goto(&format!("{market_base}/review/{pending}")).await.unwrap();
    assert!(text(&reviewer, "#proposal-operating_address").await.contains("[changed]"));
    screenshot(&reviewer, "review-en").await;
    reviewer.goto(&format!("{market_base}/review/{id}")).await.unwrap();
    let decided = reviewer.find(Locator::Css("#proposal-operating_address")).await.unwrap();
    assert_eq!(
        decided.attr("class").await.unwrap().as_deref(),
        Some("changed"),
        "against the version she saw"
    );
    screenshot(&reviewer, "review-applied-en").await;
    reviewer.goto(&format!("{market_base}/review/rules")).await.unwrap();
    screenshot(&reviewer, "rules-en").await;

    street.close().await.unwrap();
    reviewer.close().await.unwrap();
}
