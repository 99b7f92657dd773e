"""The HTML report's inline stylesheet and script, kept apart from the markup that uses them.

The report must open from a mail attachment or an artifact store with no network, so nothing
is linked: the CSS and the small filter script are inlined. The script is optional (the page
is complete without it) and the page's Content-Security-Policy allows exactly this script by
its hash, so even a value that slipped past escaping could not run as code.
"""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CSP", "CSS", "SCRIPT"]

CSS = """
:root{--bg:#f6f7f9;--fg:#1f2328;--muted:#5f6b7a;--card:#fff;--line:#d9dee4;--soft:#eef1f4;
--ok:#1e8e3e;--warn:#b06000;--err:#c5221f;--ok-bg:#e6f4ea;--warn-bg:#fef3e0;--err-bg:#fce8e6;
--accent:#1a73e8;--new:#1a73e8;--new-bg:#e8f0fe;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--bg:#0f1318;--fg:#e3e6ea;--muted:#9aa4b1;--card:#181d24;
--line:#2c343e;--soft:#212831;--ok:#5bb974;--warn:#fcad52;--err:#f28b82;--ok-bg:#17301f;
--warn-bg:#3a2a12;--err-bg:#3b1a19;--accent:#8ab4f8;--new:#8ab4f8;--new-bg:#1c2b45}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif}
main,header.top,footer{max-width:1240px;margin:0 auto;padding:0 20px}
header.top{padding-top:22px}
h1{font-size:22px;margin:0 0 4px;display:flex;align-items:center;gap:10px;flex-wrap:wrap}
h2{font-size:17px;margin:0 0 12px}
h3{font-size:15px;margin:0;display:flex;align-items:center;gap:8px;flex-wrap:wrap}
code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.meta{color:var(--muted);margin:0}
.pill{display:inline-block;border-radius:999px;padding:1px 10px;font-size:12px;font-weight:600;
border:1px solid currentColor;white-space:nowrap}
.s-ok,.o-in_sync{color:var(--ok)}.s-suspect,.o-drift{color:var(--warn)}.s-failed,.o-error{color:var(--err)}
h1 .pill{font-size:14px;padding:2px 12px}
.banner{margin:16px 0;padding:12px 16px;border-radius:10px;border:1px solid var(--line);font-size:15px}
.banner.o-in_sync{background:var(--ok-bg)}.banner.o-drift{background:var(--warn-bg)}
.banner.o-error{background:var(--err-bg)}
.banner b{color:inherit}
.banner span{color:var(--fg)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px;margin:16px 0}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:12px 14px;min-width:0}
.card .label{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .value{font-size:26px;font-weight:650;margin-top:2px}
.card .sub{color:var(--muted);font-size:12.5px;overflow-wrap:anywhere}
.card.src{border-left:4px solid var(--ok)}.card.src.s-failed{border-left-color:var(--err)}
.card.src.s-suspect{border-left-color:var(--warn)}
.card.src .name{font-weight:650;color:var(--fg);overflow-wrap:anywhere}
.card.src .value{font-size:20px;color:var(--fg)}
.card.src .err{color:var(--err);font-size:12.5px;margin-top:4px;overflow-wrap:anywhere}
.panel{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:16px 18px;margin:16px 0}
table.summary td{padding:4px 8px}table.summary td:first-child{white-space:nowrap}
table.summary tr.total td{font-weight:650;border-bottom:0}
table.findings{table-layout:fixed;min-width:900px}
table.findings td{overflow-wrap:anywhere}
.c-num{width:17%}.c-src{width:10%}.c-ids{width:12%}.c-cid{width:11%}.c-seen{width:15%}.c-act{width:10%}
.c-detail{width:25%}
table.findings time{white-space:nowrap}.card .value .muted{font-size:15px;font-weight:500}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600;background:var(--soft);position:sticky;top:0}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td.detail{overflow-wrap:anywhere}
td.ids code{display:block}
tr.new td:first-child{box-shadow:inset 3px 0 var(--new)}
.sw{display:inline-block;width:11px;height:11px;border-radius:3px;flex:none}
.badge{display:inline-block;font-size:11px;font-weight:700;border-radius:4px;padding:0 5px;margin-left:6px;
vertical-align:1px;text-transform:uppercase;letter-spacing:.03em}
.badge.new{color:var(--new);background:var(--new-bg)}
.act{white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.act .st-failed{color:var(--err);font-weight:600}.act .st-done{color:var(--ok)}
.act .st-skipped{color:var(--warn)}.muted{color:var(--muted)}
a{color:var(--accent)}
section.kind{margin-top:22px}
section.kind>p{margin:4px 0 8px;color:var(--muted)}
details.group{margin:8px 0;border:1px solid var(--line);border-radius:8px;overflow:hidden}
details.group>summary{cursor:pointer;padding:7px 12px;background:var(--soft);font-weight:600}
details.group>summary .muted{font-weight:400}
details.group table{font-size:13px}
.tablewrap{overflow-x:auto}
#filter{display:flex;gap:14px;align-items:center;flex-wrap:wrap;margin:0 0 8px}
#filter input[type=search]{padding:6px 10px;border:1px solid var(--line);border-radius:6px;min-width:260px;
background:var(--bg);color:var(--fg)}
.chart svg{width:100%;height:auto;display:block}
.chart .axis{stroke:var(--line)}.chart text{fill:var(--muted);font-size:11px}
.chart .legend text{fill:var(--fg);font-size:12px}
.chart .o-in_sync{fill:var(--ok)}.chart .o-drift{fill:var(--warn)}.chart .o-error{fill:var(--err)}
.chart .total{fill:var(--fg);font-weight:600}.chart text.empty{font-size:15px}
.insync{font-size:15px;padding:8px 0}
footer{color:var(--muted);font-size:12px;padding:8px 20px 28px}
@media print{#filter{display:none}details.group>summary{background:none}}
"""

SCRIPT = """(function(){
var bar=document.getElementById('filter');if(!bar)return;bar.hidden=false;
var q=document.getElementById('q'),onlyNew=document.getElementById('only-new'),
count=document.getElementById('shown'),rows=document.querySelectorAll('tr.f'),texts=null;
function apply(){
 if(texts===null){texts=[];for(var i=0;i<rows.length;i++)texts.push(rows[i].textContent.toLowerCase());}
 var t=q.value.trim().toLowerCase(),n=onlyNew.checked,shown=0;
 for(var i=0;i<rows.length;i++){var ok=(!n||rows[i].classList.contains('new'))&&(!t||texts[i].indexOf(t)>=0);
  rows[i].hidden=!ok;if(ok)shown++;}
 document.querySelectorAll('details.group').forEach(function(d){
  var any=d.querySelector('tr.f:not([hidden])')!==null;d.hidden=!any;if(any&&(t||n))d.open=true;});
 document.querySelectorAll('section.kind').forEach(function(s){
  s.hidden=s.querySelector('details.group:not([hidden])')===null;});
 count.textContent=(t||n)?shown+' of '+rows.length+' findings shown':'';
}
q.addEventListener('input',apply);onlyNew.addEventListener('change',apply);
})();"""

_SCRIPT_HASH = base64.b64encode(hashlib.sha256(SCRIPT.encode("utf-8")).digest()).decode("ascii")

# No network, no plugin, no form target; inline styles; only our own script, by hash.
CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
    f"script-src 'sha256-{_SCRIPT_HASH}'; base-uri 'none'; form-action 'none'"
)
