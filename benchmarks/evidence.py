"""Is the pipeline's evidence where the coders found it? CodiEsp-X spans against the attention's spans.

Spanish CodiEsp carries CodiEsp-X: for each code of a document, the character spans that the coders
marked as its evidence. For every code that the `icd-coding` pipeline predicts correctly on a test
document, this reports how often its top evidence span (hit@1), or one of its top three (hit@3),
overlaps a gold span of that code. The baseline picks, from all windows of 1 to 5 tokens, those that
share the most words with the code's terms (the same terms the model has: the description and the
train-split evidence texts), shortest first, then earliest; hit@3 takes its three best windows that do
not overlap. Both methods give spans of at most 5 tokens.

Loads `--checkpoint` (a Spanish CodiEsp-D top-50 model), or trains it first with
`python train.py --preset codiesp-d-50 --language es` (about 10 minutes on 2 CPU cores).

    python benchmarks/evidence.py [--checkpoint msmn-codiesp-d-50-es] [--split test]

With `--mdace MIMIC_DIR`, the same question on MDACE (professional coders' evidence in MIMIC-III
discharge summaries; your MIMIC-III v1.4 folder gives the text) for an ICD-9 MIMIC-III checkpoint:
for each gold code of an admission that the model knows, the pipeline's evidence spans of that code
(`codes=`, whatever its probability), scored with MDACE's four measures against all the gold
evidence (codes the model does not know count as missed). MDACE's published figures (ICD-9,
discharge summaries, test, EffectiveCAN): exact-token F1 36.4, position-independent token F1 47.6,
exact-span F1 25.4 with unsupervised attention; 42.6 / 57.4 / 26.6 supervised.

    python benchmarks/evidence.py --mdace /path/to/mimic-iii-1.4 --checkpoint msmn-mimic3-full [--num-evidence 3]
"""

import argparse
import subprocess
import sys
from pathlib import Path

from transformers import AutoTokenizer

import datasets_scripts
from msmn.evaluation.evidence import evidence_scores_of
from modeling_msmn import split_words
from msmn.checkpoints import load_coder

MAX_SPAN_TOKENS = 5


def overlaps(span, gold_spans) -> bool:
    return any(span[0] < end and start < span[1] for start, end in gold_spans)


def word_overlap_spans(words: list[str], offsets, term_words: set[str], num_spans: int) -> list[tuple[int, int]]:
    """Character spans of the windows (1–5 tokens) sharing the most distinct words with the terms."""
    windows = []
    for first in range(len(words)):
        for last in range(first, min(first + MAX_SPAN_TOKENS, len(words))):
            shared = len(set(words[first : last + 1]) & term_words)
            windows.append((-shared, last - first, first, last))
    chosen = []
    for _, _, first, last in sorted(windows):
        if len(chosen) == num_spans:
            break
        if all(last < f or first > l for f, l in chosen):
            chosen.append((first, last))
    return [(offsets[first][0], offsets[last][1]) for first, last in chosen]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--checkpoint", default="msmn-codiesp-d-50-es")
    parser.add_argument("--split", default="test", choices=["validation", "test"])
    parser.add_argument("--mdace", metavar="MIMIC_DIR", help="score MDACE's evidence instead (an ICD-9 MIMIC-III checkpoint)")
    parser.add_argument("--num-evidence", type=int, default=3, help="with --mdace: evidence spans per code")
    args = parser.parse_args()
    if args.mdace:
        data = datasets_scripts.load("mdace", config="mdace-icd9", data_dir=args.mdace)
        scores = evidence_scores_of(load_coder(args.checkpoint, device=None), data.splits[args.split], args.num_evidence,
                                    MAX_SPAN_TOKENS)
        print(f"MDACE {args.split}, {args.checkpoint}, {args.num_evidence} spans per gold code (in %):")
        print("| measure | precision | recall | F1 |\n|---|---|---|---|")
        for measure in ("exact_span", "span_text", "exact_token", "token_text"):
            print(f"| {measure.replace('_', ' ')} | " + " | ".join(
                f"{100 * scores[f'{measure}_{part}']:.1f}" for part in ("precision", "recall", "f1")) + " |")
        return
    if not Path(args.checkpoint).is_dir():
        print(f"{args.checkpoint} not found: training it with train.py --preset codiesp-d-50 --language es")
        subprocess.run([sys.executable, "train.py", "--preset", "codiesp-d-50", "--language", "es",
                        "--output_dir", args.checkpoint], check=True)
    coder = load_coder(args.checkpoint, device=None)
    config = coder.model.config
    tokenizer = AutoTokenizer.from_pretrained(args.checkpoint)
    documents = datasets_scripts.load("codiesp", config="codiesp-d-50", language="es").splits[args.split]
    term_words = {config.id2label[c]: {w for term in terms for w in split_words(term)} for c, terms in enumerate(config.code_terms)}

    counts = {"msmn": [0, 0], "baseline": [0, 0]}
    span_characters = {"msmn": 0, "baseline": 0}
    evaluated = correct_without_gold_span = predicted = 0
    predictions = coder(list(documents["text"]), batch_size=8, num_evidence=3, max_span_tokens=MAX_SPAN_TOKENS)
    for document, codes in zip(documents, predictions):
        gold = {}
        for row in document["evidence"]:
            gold.setdefault(row["code"], []).extend(tuple(span) for span in row["spans"])
        # the note's tokens as words (the tokenizer's split, before the vocabulary) and their offsets
        words = split_words(document["text"])[: config.max_note_tokens]
        offsets = tokenizer(document["text"], return_offsets_mapping=True)["offset_mapping"][: len(words)]
        predicted += len(codes)
        for code in codes:
            if code["code"] not in gold:
                correct_without_gold_span += code["code"] in document["gold_codes"]
                continue
            evaluated += 1
            spans = {
                "msmn": [(span["start"], span["end"]) for span in code["evidence"]],
                "baseline": word_overlap_spans(words, offsets, term_words[code["code"]], 3),
            }
            for method, method_spans in spans.items():
                counts[method][0] += bool(method_spans) and overlaps(method_spans[0], gold[code["code"]])
                counts[method][1] += any(overlaps(span, gold[code["code"]]) for span in method_spans)
                span_characters[method] += method_spans[0][1] - method_spans[0][0] if method_spans else 0

    print(f"CodiEsp-D top-50, Spanish, {args.split} split ({len(documents)} documents): {predicted} predicted codes, "
          f"{evaluated} correct with CodiEsp-X spans ({correct_without_gold_span} correct without)")
    print("\n| evidence | hit@1 | hit@3 | mean top-span length (characters) |\n|---|---|---|---|")
    for method, name in (("msmn", "MSMN attention (icd-coding pipeline)"), ("baseline", "most words shared with the code's terms")):
        hit1, hit3 = (100 * count / max(evaluated, 1) for count in counts[method])
        print(f"| {name} | {hit1:.1f}% | {hit3:.1f}% | {span_characters[method] / max(evaluated, 1):.1f} |")


if __name__ == "__main__":
    main()
