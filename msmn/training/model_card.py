"""The model card of a trained checkpoint: `model_card.md` (a Jinja template) filled in through
`huggingface_hub.ModelCard`, with the test results as the card's model-index."""

from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from datasets_scripts import DataCard
from modeling_msmn import MSMNConfig
from msmn.evaluation.metrics import metric_table

TEMPLATE = Path(__file__).resolve().parents[2] / "model_card.md"  # the template at the top of the repository


def model_card(config: MSMNConfig, results: dict[str, float], card: DataCard, repo: str, min_notes: int) -> ModelCard:
    """`model_card.md` filled in for this model: its data, codes, settings and test results, with the
    results as the card's model-index (one `EvalResult` per metric)."""
    evaluations = [
        EvalResult(task_type="text-classification", task_name="Multi-label ICD coding", dataset_type=card.dataset_id,
                   dataset_name=card.name, dataset_split="test", metric_type=key, metric_name=key.replace("_", " "),
                   metric_value=round(100 * value, 2))
        for key, value in results.items() if key != "threshold"
    ]
    card_data = ModelCardData(
        model_name=Path(repo).name, language=[card.language], license=card.license, library_name="transformers",
        pipeline_tag="text-classification", datasets=[card.dataset_id], eval_results=evaluations or None,
        tags=["icd-coding", "clinical-nlp", "medical-coding", "multi-label-classification", "msmn"],
    )
    codes = [config.id2label[i] for i in range(config.num_labels)]
    return ModelCard.from_template(
        card_data, template_path=str(TEMPLATE), repo=repo, config=config,
        data=card, code_examples=", ".join(codes[:5]), threshold=round(config.threshold, 4), min_notes=min_notes,
        metric_table=metric_table(results) if results else "(no test split)",
    )
