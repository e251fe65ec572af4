#!/usr/bin/env python3
"""Fill `exp_annotations: FILL` placeholders in a promtool test file with the
annotations promtool renders for the alert that fires (a snapshot: read the
text before you keep it). Every exp_alert of the file must carry FILL.
Usage, in grafana/alerts/tests/: ./fill-annotations.py FILE.yml
Needs promtool (scripts/prometheus install) and PyYAML."""
import json, re, subprocess, sys, yaml, os

path = sys.argv[1]
text = open(path).read()
tmp = path + '.tmp.yml'
open(tmp, 'w').write(re.sub(r'^\s*exp_annotations: FILL\n', '', text, flags=re.M))
doc = yaml.safe_load(open(tmp))
out = subprocess.run(['promtool', 'test', 'rules', os.path.basename(tmp)], capture_output=True, text=True)
os.remove(tmp)
def dur(v):
    """promtool duration text (1h40m, 100m, 6m30s) -> seconds."""
    total = 0
    for n, u in re.findall(r'(\d+)(ms|s|m|h|d)', str(v)):
        total += int(n) * {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600, 'd': 86400}[u]
    return total
got = {}  # (alertname, time) -> list of (labels, annotations)
pair = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
def parse(s):
    return {k: json.loads('"' + v + '"') for k, v in pair.findall(s)}
cur = None; in_got = False; labels = None
for line in (out.stdout + out.stderr).splitlines():
    m = re.match(r'\s*alertname: (\S+), time: (\S+),', line)
    if m:
        cur = (m.group(1), dur(m.group(2))); in_got = False; continue
    if re.match(r'\s*got:\[', line): in_got = True; continue
    if in_got and line.strip().startswith('Labels:{'):
        labels = parse(line.strip()[len('Labels:{'):-1])
    elif in_got and line.strip().startswith('Annotations:{'):
        got.setdefault(cur, []).append((labels, parse(line.strip()[len('Annotations:{'):-1])))
fills = []
for t in doc['tests']:
    for c in t.get('alert_rule_test', []):
        for a in c.get('exp_alerts') or []:
            want = {k: str(v) for k, v in a['exp_labels'].items()}
            want['alertname'] = c['alertname']
            key = (c['alertname'], dur(c['eval_time']))
            cands = [ann for lab, ann in got.get(key, []) if lab == want]
            if len(cands) != 1:
                sys.exit(f'no unique got alert for {key} {want}: {got.get(key)}\n{out.stdout}')
            fills.append(cands[0])
lines = text.split('\n'); res = []; i = 0
for line in lines:
    m = re.match(r'^(\s*)exp_annotations: FILL$', line)
    if m:
        ind = m.group(1); ann = fills[i]; i += 1
        res.append(f'{ind}exp_annotations:')
        for k in sorted(ann):
            res.append(f'{ind}  {k}: {json.dumps(ann[k], ensure_ascii=False)}')
    else:
        res.append(line)
assert i == len(fills)
open(path, 'w').write('\n'.join(res))
print(f'filled {i}')
