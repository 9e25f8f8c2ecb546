"""An icd-coding pipeline's evidence scored against MDACE's gold evidence spans, note by note, with
MDACE's four measures (`msmn.evaluation.metrics.evidence_scores`)."""

from datasets_scripts.mdace import note_documents
from msmn.evaluation.metrics import evidence_scores


def evidence_scores_of(coder, examples, num_evidence: int, max_span_tokens: int = 5) -> dict[str, float]:
    """MDACE's four measures (`msmn.evaluation.metrics.evidence_scores`) of an icd-coding pipeline's evidence
    for each example's gold codes that the model knows, scored note by note as MDACE does."""
    known = coder.model.config.label2id
    documents = []
    for example in examples:
        asked = [code for code in example["labels"] if code in known]
        predictions = coder(example["text"], codes=asked, num_evidence=num_evidence, max_span_tokens=max_span_tokens)
        predicted = [(span["start"], span["end"], code["code"]) for code in predictions for span in code["evidence"]]
        documents += note_documents(example, predicted)
    return evidence_scores(documents)
