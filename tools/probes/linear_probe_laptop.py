# Linear probe on frozen laptop models (issue 24): mean-pooled hidden states of every layer -> logistic regression
# (SST-2, CoLA) or ridge (STS-B, the pair encoded jointly), at three regularisation strengths, scored on the GLUE
# validation split. Reads the laptop registry (outputs/laptop/runs, run ids below) and the mirror's GLUE files.
# usage: python tools/probes/linear_probe_laptop.py [n_train=4000] [models=student,weak,...]
# Result (2026-12-06, printed per model: score at each strength): every model, the random-init 6-layer encoder
# included, at SST-2 56.3-59.3, CoLA -2.9-1.3, STS-B 7.9-12.4: the probe sees bag-of-bytes features, not pre-training.
import sys, json, time, numpy as np, torch
from pathlib import Path
from transformers import AutoModel, AutoConfig
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import matthews_corrcoef, accuracy_score
from scipy.stats import pearsonr, spearmanr
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from dwt_lib.data.glue import read_split
from dwt_lib.data.bytetok import byte_tokenizer
torch.set_num_threads(2)
R = Path(__file__).resolve().parents[2] / "outputs" / "laptop" / "runs"
MODELS = {"student": "student-aee3ec3391", "student:s43": "student-4d20a33b9d", "weak": "teacher-be3198beeb",
          "very_weak": "teacher-4ae9bea4b1", "extremely_weak": "teacher-c297b07fed", "random-6l": None}
NTR = int(sys.argv[1]) if len(sys.argv) > 1 else 4000
if len(sys.argv) > 2: MODELS = {k: v for k, v in MODELS.items() if k in sys.argv[2].split(",")}
TASKS = {"sst2": ("sentence", None, 192), "cola": ("sentence", None, 128), "stsb": ("sentence1", "sentence2", 272)}
tok = byte_tokenizer()
def data(task, split, n):
    ds = read_split(task, split)
    if n and len(ds) > n: ds = ds.sample(n=n, random_state=0)
    a, b, L = TASKS[task]
    enc = tok(list(ds[a]), list(ds[b]) if b else None, truncation=True, max_length=L)
    return enc["input_ids"], np.array(ds["label"])
def feats(model, ids, layers_all=True):
    out = []
    order = np.argsort([len(x) for x in ids])
    res = [None] * len(ids)
    with torch.no_grad():
        for i in range(0, len(ids), 64):
            idx = order[i:i+64]; L = max(len(ids[j]) for j in idx)
            x = torch.zeros(len(idx), L, dtype=torch.long); m = torch.zeros(len(idx), L, dtype=torch.long)
            for k, j in enumerate(idx): x[k, :len(ids[j])] = torch.tensor(ids[j]); m[k, :len(ids[j])] = 1
            hs = model(input_ids=x, attention_mask=m, output_hidden_states=True).hidden_states
            hs = hs[1:] if layers_all else hs[-1:]
            mf = m.unsqueeze(-1).float()
            f = torch.cat([(h * mf).sum(1) / mf.sum(1) for h in hs], -1)
            for k, j in enumerate(idx): res[j] = f[k].numpy()
    return np.stack(res)
def score(task, p, y):
    if task == "sst2": return 100 * accuracy_score(y, p)
    if task == "cola": return 100 * matthews_corrcoef(y, p)
    return 100 * (pearsonr(p, y)[0] + spearmanr(p, y)[0]) / 2
D = {t: (data(t, "train", NTR), data(t, "validation", None)) for t in TASKS}
for name, rd in MODELS.items():
    t0 = time.time()
    if rd:
        model = AutoModel.from_pretrained(str(R / rd / "model"))
    else:
        cfg = AutoConfig.from_pretrained(str(R / "student-aee3ec3391" / "model")); torch.manual_seed(0)
        model = AutoModel.from_config(cfg)
    model.eval(); row = {}
    for t, ((tri, try_), (vai, vay)) in D.items():
        Xtr, Xva = feats(model, tri), feats(model, vai)
        sc = StandardScaler().fit(Xtr); Xtr, Xva = sc.transform(Xtr), sc.transform(Xva)
        if t == "stsb":
            s = [score(t, Ridge(alpha=a).fit(Xtr, try_).predict(Xva), vay) for a in (10.0, 100.0, 1000.0)]
        else:
            s = [score(t, LogisticRegression(C=c, max_iter=3000).fit(Xtr, try_).predict(Xva), vay) for c in (0.01, 0.1, 1.0)]
        row[t] = [round(v, 1) for v in s]
    print(name, NTR, row, f"{time.time()-t0:.0f}s", flush=True)
