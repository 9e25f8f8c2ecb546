"""MSMN for automatic ICD coding as a Hugging Face model.

Importing this package registers MSMN with the Auto classes and the `icd-coding` pipeline with
`PIPELINE_REGISTRY` (local use needs no remote code), and marks the classes so that `save_pretrained`
copies their code into the checkpoint folder.
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_msmn import MSMNConfig
from .modeling_msmn import MSMNForSequenceClassification, MSMNModel, MSMNPreTrainedModel
from .pipeline_msmn import ICDCodingPipeline
from .tokenization_msmn import build_code_term_ids, build_tokenizer, build_vocabulary, split_words

AutoConfig.register("msmn", MSMNConfig, exist_ok=True)
AutoModel.register(MSMNConfig, MSMNModel, exist_ok=True)
AutoModelForSequenceClassification.register(MSMNConfig, MSMNForSequenceClassification, exist_ok=True)
MSMNConfig.register_for_auto_class()
MSMNModel.register_for_auto_class("AutoModel")
MSMNForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
PIPELINE_REGISTRY.register_pipeline(
    "icd-coding", pipeline_class=ICDCodingPipeline, pt_model=AutoModelForSequenceClassification, type="text"
)

__all__ = [
    "ICDCodingPipeline",
    "MSMNConfig",
    "MSMNForSequenceClassification",
    "MSMNModel",
    "MSMNPreTrainedModel",
    "build_code_term_ids",
    "build_tokenizer",
    "build_vocabulary",
    "split_words",
]
