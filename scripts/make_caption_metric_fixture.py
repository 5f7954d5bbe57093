#!/usr/bin/env python3
"""Reference scores of the COCO caption evaluation for headstart's caption
metrics (tests/fixtures/captions/coco_eval_reference.json).

Runs pycocoevalcap 1.2 exactly as `COCOEvalCap.evaluate` does: Stanford's
PTBTokenizer (stanford-corenlp 3.4.1, `-preserveLines -lowerCase`, then the
punctuation tokens dropped), then Bleu(4) (corpus level, `closest` reference
length), Rouge (ROUGE-L, beta 1.2) and Cider (CIDEr-D: sigma 6, clipped
counts, document frequencies from the references of the evaluated set). It
writes every raw sentence with the tokens the PTBTokenizer gave it, the
captions per image, the corpus scores and the per-image scores.

The sentences are written here: scene captions in the style of `headstart
data captions-demo`, short radiology-style findings with abbreviations,
numbers, hyphens, contractions, quotes and brackets, and hypotheses that
share from nothing to everything with their references.

Needs Java on PATH (the tokenizer is a jar) and
    pip install pycocoevalcap==1.2        (pulls pycocotools 2.0.11, numpy)
Usage: python scripts/make_caption_metric_fixture.py [--out FILE]
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

ROOT = Path(__file__).resolve().parent.parent

# (references, hypothesis) per image
IMAGES = [
    (["A sneaker to the left of a handbag.", "a sneaker is left of a bag"],
     "a sneaker to the left of a handbag"),
    (["A dress above a pair of trousers.", "There's a dress over some trousers."],
     "a dress above a sneaker"),
    (["Two shirts and a coat.", "a coat next to two shirts", "Shirts (two) beside a coat!"],
     "two coats and a shirt"),
    (["An ankle boot at the bottom right; a bag at the top-left."],
     "an ankle boot at the bottom right and a bag at the top left"),
    (["The heart is normal in size.", "Normal heart size.", "Heart size within normal limits."],
     "the heart size is normal"),
    (["No acute cardiopulmonary abnormality.", "No acute cardiopulmonary disease."],
     "no acute cardiopulmonary abnormality"),
    (["Lungs are clear bilaterally, without effusion or pneumothorax.",
      "The lungs are clear. No pleural effusion; no pneumothorax."],
     "lungs are clear . no effusion or pneumothorax ."),
    (["Mild degenerative changes of the thoracic spine (T7-T9).",
      "Degenerative change, thoracic spine."],
     "mild degenerative changes in the thoracic spine"),
    (["A 2.5 cm nodule in the right upper lobe, e.g. granuloma.",
      "Right upper lobe nodule measuring 2.5 cm."],
     "a 2 cm nodule in the left lower lobe"),
    (["The patient doesn't have pneumonia; it can't be excluded \"clinically\" though."],
     "the patient does not have pneumonia"),
    (["Stable cardiomediastinal silhouette -- unchanged since 2009.",
      "Cardiomediastinal silhouette is stable... unchanged."],
     "stable cardiomediastinal silhouette , unchanged"),
    (["A trouser, a pullover and a sandal, left to right."],
     "a sandal"),
    (["Three bags in a row.", "three handbags side by side", "Bags: three, in a row."],
     "three bags in a row"),
    (["Heart size is upper limits of normal, with tortuous aorta.",
      "Borderline cardiomegaly and a tortuous aorta."],
     "heart size is normal . the aorta is tortuous ."),
    (["A shirt above a sneaker, which is above a bag."],
     "bag sneaker shirt"),
    (["An 'old' coat and a new one.", "two coats, one old"],
     "an old coat and a new coat"),
    (["Sneaker; sneaker; sneaker?", "three sneakers"],
     "sneaker sneaker sneaker sneaker sneaker sneaker"),
    (["No focal consolidation, pneumothorax or large pleural effusion is seen.",
      "There is no focal airspace consolidation.",
      "No consolidation."],
     "no focal consolidation is seen"),
    (["The ETT tip is 4 cm above the carina [repositioned].",
      "Endotracheal tube 4 cm above carina."],
     "the endotracheal tube tip is 4 cm above the carina"),
    (["Dr. Smith's report: 5% opacity and/or 1,000 mL, etc.", "I'm sure they'll say we've seen it."],
     "dr. smith says 5 % opacity"),
    (["It won't resolve; it cannot be seen in the U.S. at 3:00 {approx}.", "Don't worry -- it's $20."],
     "it will not resolve and can not be seen"),
    (["A bag to the right of a dress and a coat below them."],
     "a dress to the left of a bag , a coat below"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path,
                    default=ROOT / "tests" / "fixtures" / "captions" / "coco_eval_reference.json")
    args = ap.parse_args()
    gts = {i: [{"caption": r} for r in refs] for i, (refs, _) in enumerate(IMAGES)}
    res = {i: [{"caption": hyp}] for i, (_, hyp) in enumerate(IMAGES)}
    tok = PTBTokenizer()
    gts_t, res_t = tok.tokenize(gts), tok.tokenize(res)
    tokens = {}
    for i, (refs, hyp) in enumerate(IMAGES):
        for raw, t in zip(refs, gts_t[i]):
            tokens[raw] = t
        tokens[hyp] = res_t[i][0]

    scores, per_image = {}, {}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]),
                          (Rouge(), ["ROUGE_L"]), (Cider(), ["CIDEr"])]:
        score, each = scorer.compute_score(gts_t, res_t)
        if isinstance(score, list):
            for name, s, e in zip(names, score, each):
                scores[name], per_image[name] = float(s), [float(v) for v in e]
        else:
            scores[names[0]], per_image[names[0]] = float(score), [float(v) for v in each]

    out = {
        "source": "pycocoevalcap 1.2 (PTBTokenizer from stanford-corenlp 3.4.1, Bleu, Rouge, "
                  "Cider); scripts/make_caption_metric_fixture.py",
        "tokens": tokens,
        "images": [{"references": refs, "hypothesis": hyp} for refs, hyp in IMAGES],
        "scores": scores,
        "per_image": per_image,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(out, f, indent=1, ensure_ascii=False)
        f.write("\n")
    os.replace(tmp, args.out)
    print(json.dumps(scores, indent=1))


if __name__ == "__main__":
    main()
