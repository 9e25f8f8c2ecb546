"""MSMN for automatic ICD coding as a Hugging Face model.

Importing this package registers MSMN with the Auto classes and the `icd-coding` pipeline with
`PIPELINE_REGISTRY` (local use needs no remote code). The same registrations make a checkpoint
folder self-contained: `save_pretrained` copies the config's and model's code into it, and the
pipeline's `save_pretrained` also its own code and its entry in the config:

    ICDCodingPipeline(model=model, tokenizer=tokenizer).save_pretrained(folder)
"""

from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification
from transformers.pipelines import PIPELINE_REGISTRY

from .configuration_msmn import AUTO_MAP, MSMNConfig
from .modeling_msmn import MSMNForSequenceClassification, MSMNModel, MSMNPreTrainedModel
from .pipeline_msmn import ICDCodingPipeline
from .tokenization_msmn import build_code_term_ids, build_tokenizer, build_vocabulary, split_words

AutoConfig.register("msmn", MSMNConfig, exist_ok=True)
AutoModel.register(MSMNConfig, MSMNModel, exist_ok=True)
AutoModelForSequenceClassification.register(MSMNConfig, MSMNForSequenceClassification, exist_ok=True)
for auto_class, reference in AUTO_MAP.items():  # "module.ClassName" of each Auto class
    serving_class = {"MSMNConfig": MSMNConfig, "MSMNModel": MSMNModel,
                     "MSMNForSequenceClassification": MSMNForSequenceClassification}[reference.split(".")[1]]
    serving_class.register_for_auto_class(auto_class)
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
