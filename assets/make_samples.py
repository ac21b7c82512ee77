#!/usr/bin/env python3
"""Regenerate the sample images in ``assets/`` (all content made up for this project).

* ``sample_document.png``: a rendered report page (1240 x 1754 px, A4 at 150 dpi): headings,
  paragraphs, a table, a bar chart and page margins;
* ``sample_screenshot.png``: a dashboard-style app screenshot (1280 x 800 px);
* ``sample_document_overlay.png``: ``pixelprune inspect assets/sample_document.png --overlay``.

Needs headless Chromium and fonts (Debian: ``apt-get install chromium fonts-dejavu-core
fonts-liberation optipng``) and an installed ``pixelprune``. Run from the repository root:
``python assets/make_samples.py``. Chromium versions render text slightly differently, so a rerun
may change pixels (and kept-token counts) a little.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ASSETS = Path(__file__).resolve().parent

DOCUMENT_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><style>
  @page { margin: 0; }
  html, body { margin: 0; background: #fff; }
  body { width: 1240px; height: 1754px; box-sizing: border-box; padding: 118px 124px 96px;
         font-family: "DejaVu Serif", serif; font-size: 19px; line-height: 1.5; color: #1a1a1a;
         position: relative; }
  .runhead { position: absolute; top: 56px; left: 124px; right: 124px; font: 15px "DejaVu Sans", sans-serif;
             color: #666; display: flex; justify-content: space-between; border-bottom: 1px solid #bbb;
             padding-bottom: 6px; }
  h1 { font: bold 34px "DejaVu Sans", sans-serif; margin: 18px 0 6px; color: #0b2545; }
  .authors { font: 17px "DejaVu Sans", sans-serif; color: #444; margin-bottom: 22px; }
  .abstract { background: #f3f6fa; border-left: 5px solid #0b2545; padding: 14px 20px; margin: 0 0 22px;
              font-size: 17.5px; }
  h2 { font: bold 23px "DejaVu Sans", sans-serif; color: #0b2545; margin: 26px 0 8px; }
  p { margin: 0 0 12px; text-align: justify; hyphens: auto; }
  table { border-collapse: collapse; margin: 14px auto 6px; font: 16.5px "DejaVu Sans", sans-serif; }
  th, td { padding: 6px 16px; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  thead th { border-top: 2px solid #222; border-bottom: 1px solid #222; }
  tbody tr:last-child td { border-bottom: 2px solid #222; }
  .caption { font: italic 15.5px "DejaVu Serif", serif; color: #444; text-align: center; margin-bottom: 14px; }
  .figure { display: flex; justify-content: center; margin: 12px 0 4px; }
  .footnote { position: absolute; bottom: 118px; left: 124px; right: 124px; font-size: 14.5px; color: #555;
              border-top: 1px solid #bbb; padding-top: 6px; }
  .pageno { position: absolute; bottom: 60px; left: 0; right: 0; text-align: center;
            font: 15px "DejaVu Sans", sans-serif; color: #666; }
</style></head><body>
<div class="runhead"><span>Northfield Community Energy Cooperative</span><span>Annual Report 2025</span></div>
<h1>Solar Output and Storage Performance, 2025</h1>
<div class="authors">Operations Committee &middot; prepared for the members' meeting of 14 March 2026</div>
<div class="abstract"><b>Summary.</b> The cooperative's three rooftop arrays produced 1,184 MWh in 2025,
7.9% more than in 2024, while the battery added in May shifted 212 MWh of midday output into the
evening peak. Availability stayed above 99% at every site. This report sets out monthly output,
storage use, maintenance events and the proposals for the coming year.</div>
<h2>1. Generation</h2>
<p>Output followed the usual seasonal pattern, with June the strongest month at 152 MWh and December
the weakest at 31 MWh. The school array on Mill Lane benefited from the inverter replacement in
February: its performance ratio rose from 0.78 to 0.84, the highest of the three sites. The depot
array lost eleven days in August while the roof membrane was repaired; the insurer covered the lost
revenue under the business-interruption clause.</p>
<p>Irradiance measured at the library site was 3.1% above the ten-year mean, so roughly a third of
the year-on-year gain is due to the weather and the rest to the equipment upgrades.</p>
<table><thead><tr><th>Site</th><th>Capacity (kWp)</th><th>Output (MWh)</th><th>Change</th><th>Availability</th></tr></thead>
<tbody>
<tr><td>Mill Lane school</td><td>420</td><td>436</td><td>+12.4%</td><td>99.6%</td></tr>
<tr><td>Harbour depot</td><td>380</td><td>371</td><td>+1.8%</td><td>99.1%</td></tr>
<tr><td>Town library</td><td>350</td><td>377</td><td>+9.0%</td><td>99.8%</td></tr>
<tr><td><b>Total</b></td><td><b>1,150</b></td><td><b>1,184</b></td><td><b>+7.9%</b></td><td><b>99.5%</b></td></tr>
</tbody></table>
<div class="caption">Table 1. Installed capacity, annual output and availability per site.</div>
<h2>2. Storage</h2>
<p>The 500 kWh battery at the depot entered service on 6 May. It charged on 214 days, mostly between
11:00 and 14:00, and discharged into the 17:00&ndash;20:00 peak, when the tariff is highest. Round-trip
efficiency averaged 88.5%, slightly below the 90% in the supplier's datasheet.</p>
<div class="figure"><svg width="760" height="250" viewBox="0 0 760 250" font-family="DejaVu Sans" font-size="14">
  <line x1="60" y1="210" x2="740" y2="210" stroke="#222"/>
  <line x1="60" y1="20" x2="60" y2="210" stroke="#222"/>
  <text x="52" y="214" text-anchor="end">0</text><text x="52" y="139" text-anchor="end">20</text>
  <text x="52" y="64" text-anchor="end">40</text>
  <line x1="60" y1="135" x2="740" y2="135" stroke="#ddd"/><line x1="60" y1="60" x2="740" y2="60" stroke="#ddd"/>
  <g fill="#3e7cb1">
    <rect x="90" y="172" width="44" height="38"/><rect x="170" y="139" width="44" height="71"/>
    <rect x="250" y="112" width="44" height="98"/><rect x="330" y="101" width="44" height="109"/>
    <rect x="410" y="109" width="44" height="101"/><rect x="490" y="135" width="44" height="75"/>
    <rect x="570" y="165" width="44" height="45"/><rect x="650" y="187" width="44" height="23"/>
  </g>
  <g text-anchor="middle"><text x="112" y="230">May</text><text x="192" y="230">Jun</text><text x="272" y="230">Jul</text>
  <text x="352" y="230">Aug</text><text x="432" y="230">Sep</text><text x="512" y="230">Oct</text>
  <text x="592" y="230">Nov</text><text x="672" y="230">Dec</text></g>
  <text x="20" y="120" transform="rotate(-90 20 120)" text-anchor="middle">MWh shifted</text>
</svg></div>
<div class="caption">Figure 1. Energy shifted from midday to the evening peak by the battery, per month.</div>
<h2>3. Proposals for 2026</h2>
<p>The committee proposes to extend the library array by 90 kWp on the south annex roof and to
review the battery's charging schedule quarterly against the tariff. Both proposals will be put to
the vote at the members' meeting.<sup>1</sup></p>
<div class="footnote"><sup>1</sup> Figures are unaudited; the audited accounts follow in April.</div>
<div class="pageno">&ndash; 3 &ndash;</div>
</body></html>
"""

SCREENSHOT_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><style>
  html, body { margin: 0; width: 1280px; height: 800px; overflow: hidden; background: #f5f7fb;
               font-family: "DejaVu Sans", sans-serif; font-size: 14px; color: #1f2937; }
  .side { position: absolute; left: 0; top: 0; bottom: 0; width: 220px; background: #111827; color: #cbd5e1; }
  .brand { font-weight: bold; font-size: 18px; color: #fff; padding: 22px 24px 26px; }
  .nav div { padding: 11px 24px; }
  .nav .on { background: #1f2937; color: #fff; border-left: 4px solid #38bdf8; padding-left: 20px; }
  .top { position: absolute; left: 220px; right: 0; top: 0; height: 60px; background: #fff;
         border-bottom: 1px solid #e5e7eb; display: flex; align-items: center; padding: 0 28px;
         box-sizing: border-box; justify-content: space-between; }
  .search { width: 320px; height: 34px; border: 1px solid #d1d5db; border-radius: 6px; color: #9ca3af;
            display: flex; align-items: center; padding-left: 12px; box-sizing: border-box; }
  .user { display: flex; align-items: center; gap: 10px; }
  .avatar { width: 32px; height: 32px; border-radius: 50%; background: #38bdf8; }
  .main { position: absolute; left: 220px; right: 0; top: 60px; bottom: 0; padding: 26px 28px; box-sizing: border-box; }
  h1 { font-size: 22px; margin: 0 0 18px; }
  .cards { display: flex; gap: 18px; margin-bottom: 20px; }
  .card { flex: 1; background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 16px 18px; }
  .card .label { color: #6b7280; font-size: 13px; } .card .value { font-size: 26px; font-weight: bold; margin-top: 6px; }
  .card .delta { color: #059669; font-size: 13px; margin-top: 4px; } .card .delta.down { color: #dc2626; }
  .row { display: flex; gap: 18px; }
  .panel { background: #fff; border: 1px solid #e5e7eb; border-radius: 8px; padding: 16px 18px; }
  .panel h2 { font-size: 15px; margin: 0 0 12px; }
  table { border-collapse: collapse; width: 100%; font-size: 13.5px; }
  th { text-align: left; color: #6b7280; font-weight: normal; border-bottom: 1px solid #e5e7eb; padding: 7px 6px; }
  td { padding: 8px 6px; border-bottom: 1px solid #f1f5f9; }
  .pill { display: inline-block; padding: 2px 10px; border-radius: 10px; font-size: 12px; }
  .ok { background: #d1fae5; color: #065f46; } .warn { background: #fef3c7; color: #92400e; }
  .bad { background: #fee2e2; color: #991b1b; }
  .btn { background: #0284c7; color: #fff; border-radius: 6px; padding: 8px 14px; font-size: 13px; }
</style></head><body>
<div class="side"><div class="brand">&#9728; GridDesk</div><div class="nav">
<div class="on">Overview</div><div>Sites</div><div>Storage</div><div>Maintenance</div><div>Billing</div>
<div>Members</div><div>Reports</div><div>Settings</div></div></div>
<div class="top"><div class="search">Search sites, meters, tickets&hellip;</div>
<div class="user"><span class="btn">+ New ticket</span><span>R. Okafor</span><div class="avatar"></div></div></div>
<div class="main"><h1>Overview &middot; last 30 days</h1>
<div class="cards">
<div class="card"><div class="label">Generation</div><div class="value">96.4 MWh</div><div class="delta">&#9650; 4.2% vs previous</div></div>
<div class="card"><div class="label">Self-consumption</div><div class="value">71%</div><div class="delta">&#9650; 2.0 pts</div></div>
<div class="card"><div class="label">Battery cycles</div><div class="value">27</div><div class="delta down">&#9660; 3 cycles</div></div>
<div class="card"><div class="label">Open tickets</div><div class="value">5</div><div class="delta down">&#9650; 2 new</div></div>
</div>
<div class="row">
<div class="panel" style="flex: 1.35"><h2>Daily output (MWh)</h2>
<svg width="560" height="250" viewBox="0 0 560 250" font-size="11" font-family="DejaVu Sans">
<line x1="36" y1="220" x2="550" y2="220" stroke="#9ca3af"/>
<line x1="36" y1="150" x2="550" y2="150" stroke="#eef2f7"/><line x1="36" y1="80" x2="550" y2="80" stroke="#eef2f7"/>
<text x="28" y="224" text-anchor="end" fill="#6b7280">0</text><text x="28" y="154" text-anchor="end" fill="#6b7280">2</text>
<text x="28" y="84" text-anchor="end" fill="#6b7280">4</text>
<polyline fill="none" stroke="#0284c7" stroke-width="2.5" points="40,120 57,112 74,131 91,98 108,90 125,104 142,140 159,118 176,95 193,88 210,83 227,99 244,126 261,151 278,122 295,101 312,92 329,86 346,97 363,115 380,108 397,94 414,87 431,90 448,117 465,136 482,112 499,99 516,93 533,101"/>
</svg></div>
<div class="panel" style="flex: 1"><h2>Sites</h2><table>
<tr><th>Site</th><th>Today</th><th>Status</th></tr>
<tr><td>Mill Lane school</td><td>1.42 MWh</td><td><span class="pill ok">Online</span></td></tr>
<tr><td>Harbour depot</td><td>1.18 MWh</td><td><span class="pill ok">Online</span></td></tr>
<tr><td>Town library</td><td>1.25 MWh</td><td><span class="pill warn">Degraded</span></td></tr>
<tr><td>Depot battery</td><td>62% SoC</td><td><span class="pill ok">Charging</span></td></tr>
<tr><td>Fire station</td><td>&ndash;</td><td><span class="pill bad">Offline</span></td></tr>
<tr><td>Sports hall</td><td>0.87 MWh</td><td><span class="pill ok">Online</span></td></tr>
</table></div>
</div></div>
</body></html>
"""


def render(html: str, width: int, height: int, target: Path, chromium: str) -> None:
    """Screenshot ``html`` at ``width x height`` CSS pixels, device scale 1."""
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(html, encoding="utf-8")
        subprocess.run(
            [
                chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                "--force-device-scale-factor=1", "--font-render-hinting=none",
                f"--user-data-dir={tmp}/profile", f"--window-size={width},{height}",
                f"--screenshot={target}", page.as_uri(),
            ],
            check=True, capture_output=True,
        )
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", "-strip", "all", str(target)], check=True)
    print(f"wrote {target} ({target.stat().st_size // 1024} KiB)")


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        print("error: headless Chromium not found (Debian: apt-get install chromium)", file=sys.stderr)
        return 1
    render(DOCUMENT_HTML, 1240, 1754, ASSETS / "sample_document.png", chromium)
    render(SCREENSHOT_HTML, 1280, 800, ASSETS / "sample_screenshot.png", chromium)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pixelprune", "inspect", str(ASSETS / "sample_document.png"), "--overlay", tmp],
            check=True,
        )
        overlay = ASSETS / "sample_document_overlay.png"
        shutil.copyfile(Path(tmp) / "sample_document_overlay.png", overlay)
    if shutil.which("optipng"):
        subprocess.run(["optipng", "-quiet", "-o2", "-strip", "all", str(overlay)], check=True)
    print(f"wrote {overlay} ({overlay.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
