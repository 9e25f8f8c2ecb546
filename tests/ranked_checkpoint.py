"""A small untrained MSMN checkpoint that carries candidate codes beyond its label set (conftest's four
codes), with their operating points chosen on a small dev set: what the ranking, CLI and app tests share."""

import modeling_msmn
from conftest import CODE_TERMS, NOTES, make_model
from modeling_msmn import ICDCodingPipeline
from msmn.training.candidate_tuning import build_ranker

# codes absent from the label set (conftest's four codes), with their terms
UNSEEN_TERMS = {"K35.80": ["acute appendicitis"], "N18.6": ["end stage renal disease"], "H66.90": ["otitis media"],
                "K35.89": ["other appendicitis", "appendicitis NOS"], "N28.9": ["renal disorder"],
                "H65.90": ["otitis, serous"], "R73.9": ["high blood sugar"], "R07.9": ["chest pain, unspecified"],
                "R05.9": ["cough, unspecified"], "R68.0": ["low body temperature"]}
CANDIDATE_TERMS = {**CODE_TERMS, **UNSEEN_TERMS}
TRAIN_COUNTS = {"E11.65": 3, "I21.4": 2, "J18.9": 1, "R50.9": 1}
REFERENCE = ["The patient was discharged home.", "Blood pressure was normal.", "No allergies known."]
# each note names an unseen gold code by one word that a non-gold unseen code's term shares, and
# paraphrases a label code in words of another unseen code's term
MENTIONS = {"K35.80": "appendicitis", "N18.6": "renal", "H66.90": "otitis"}
PARAPHRASES = {"E11.65": "high sugar levels", "I21.4": "chest pain, troponin raised",
               "J18.9": "lung infiltrate with cough", "R50.9": "body temperature 39C"}
DEV = [(f"Admitted for {mention}; {paraphrase}.", [unseen_code, seen_code])
       for unseen_code, mention in MENTIONS.items() for seen_code, paraphrase in PARAPHRASES.items()]


def candidate_tokenizer():
    words = [word for terms in CANDIDATE_TERMS.values() for term in terms for word in modeling_msmn.split_words(term)]
    words += [word for text, _ in DEV for word in modeling_msmn.split_words(text)]
    return modeling_msmn.build_tokenizer(modeling_msmn.build_vocabulary(NOTES[:2], extra_words=words))


def write_ranked_checkpoint(folder):
    """(model, ranker, build report) of the checkpoint written to `folder`."""
    tokenizer = candidate_tokenizer()
    model = make_model(tokenizer).eval()
    ranker, report = build_ranker(model, tokenizer, CANDIDATE_TERMS, TRAIN_COUNTS, REFERENCE, [text for text, _ in DEV],
                                  [gold for _, gold in DEV], "test codes", batch_size=4)
    ICDCodingPipeline(model=model, tokenizer=tokenizer).save_pretrained(folder)
    ranker.save_pretrained(folder)
    return model, ranker, report
