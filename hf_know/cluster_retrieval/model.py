"""The PEFT tuner for PROTEUS continual fine-tuning: tasks, signatures, retrieval and routed forward passes."""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from contextlib import contextmanager

import torch
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn
from tqdm.auto import tqdm
from transformers.utils import ModelOutput

from .._adapter_loading import CheckedLoadMixin
from .head import fit_lda
from .layer import ClusterRetrievalLayer, Conv2d, Linear, Routing
from .routing import TaskRouting
from .signatures import SignatureBuffers, TaskSignature, fit_signature


class ClusterRetrievalModel(TaskRouting, CheckedLoadMixin, BaseTuner):
    """PROTEUS (arXiv 2603.13235) as a PEFT tuner; see [`ClusterRetrievalAdapterConfig`].

    Create it with `get_peft_model(model, ClusterRetrievalAdapterConfig(...))` after `import hf_know`, then per task:
    `add_task(name)`, train (any trainer; the composition and orthogonality penalties are added to `outputs.loss`
    in training mode), `fit_signature(name, dataloader)`. Routing of every forward pass:

    - `adapter_names=[...]` (PEFT's per-sample argument) with task names or indices: those tasks (oracle ids);
    - otherwise, in training mode: the newest task, the one being trained;
    - otherwise (evaluation): each sample's task is retrieved from the signatures, with no task id.

    Example:

        ```py
        >>> import hf_know
        >>> from peft import get_peft_model
        >>> config = hf_know.ClusterRetrievalAdapterConfig(target_modules=["query", "value", "classifier"])
        >>> model = get_peft_model(bert_classifier, config)
        >>> model.add_task("news"); train(model, news); model.fit_signature("news", news_loader)
        >>> model.add_task("reviews"); train(model, reviews); model.fit_signature("reviews", reviews_loader)
        >>> tasks, scores = model.retrieve(**batch)
        >>> logits = model(**batch).logits  # each sample through its retrieved task's module
        ```
    """

    prefix: str = "cr_"
    tuner_layer_cls = ClusterRetrievalLayer
    adapter_state_containers = ("cr_signatures",)
    target_module_mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    def __init__(self, model, config, adapter_name, low_cpu_mem_usage: bool = False, state_dict=None) -> None:
        self.routing = Routing()
        self.cr_signatures = None  # filled per adapter in `inject_adapter`, after nn.Module.__init__
        self._requested_tasks = None
        self._embedding_pass = False
        self._pass_hooks = []  # the single-pass routing hooks of the forward in progress
        self._prefix_running = False  # a shared-prefix hook is running the frozen blocks (`_route_in_pass`)
        self._stacked_signatures: dict = {}  # adapter -> (buffer versions, StackedSignatures) (`_stacked`)
        self._pass_points: dict = {}  # (adapter, feature_layer) -> where a forward routes itself (`_pass_point`)
        self._adapters_enabled = True
        self._autocast_adapter_dtype: dict[str, bool] = {}
        super().__init__(model, config, adapter_name, low_cpu_mem_usage=low_cpu_mem_usage, state_dict=state_dict)
        self._hooks = [
            self.model.register_forward_pre_hook(self._route, with_kwargs=True),
            self.model.register_forward_hook(self._add_regularization),
        ]

    # ----------------------------------------------------------------------------------------------------------
    # PEFT tuner plumbing

    def _prepare_adapter_config(self, peft_config, model_config):
        """Default targets as LoRA's; a module that is both targeted and in `modules_to_save` (PEFT adds the head
        to `modules_to_save` for `task_type="SEQ_CLS"`) is targeted: one update per task instead of a shared copy
        that every new task would overwrite."""
        peft_config = super()._prepare_adapter_config(peft_config, model_config)
        if isinstance(peft_config.target_modules, set) and peft_config.modules_to_save:
            peft_config.modules_to_save = [
                m for m in peft_config.modules_to_save if m not in peft_config.target_modules
            ]
        return peft_config

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key, **kwargs):
        if isinstance(target, ClusterRetrievalLayer):
            target.update_layer(adapter_name, peft_config, inference_mode=peft_config.inference_mode)
            return
        base = target.get_base_layer() if isinstance(target, BaseTunerLayer) else target
        if not isinstance(base, nn.Linear | nn.Conv2d):
            raise TypeError(
                f"ClusterRetrievalAdapterConfig.target_modules matches {current_key!r}, a {type(base).__name__}, "
                "but the method adapts nn.Linear and nn.Conv2d layers only (attention projections, MLPs, convs, "
                "classifier heads)."
            )
        layer = Conv2d if isinstance(base, nn.Conv2d) else Linear
        new_module = layer(target, adapter_name, peft_config, self.routing)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)
        self._replace_module(parent, target_name, new_module, target)

    def inject_adapter(self, model, adapter_name, *args, **kwargs) -> None:
        super().inject_adapter(model, adapter_name, *args, **kwargs)
        self._pass_points.clear()  # adapted layers changed
        if self.cr_signatures is None:
            self.cr_signatures = nn.ModuleDict()
        self.cr_signatures[adapter_name] = nn.ModuleDict()
        self._add_signature_slots(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        super().delete_adapter(adapter_name)
        self._pass_points.clear()
        del self.cr_signatures[adapter_name]

    def _enable_adapter_layers(self, enabled: bool = True) -> None:
        self._adapters_enabled = enabled
        super()._enable_adapter_layers(enabled)

    def train(self, mode: bool = True):
        """Train or eval mode, except for the frozen backbone's batch norms, which stay in eval mode: their running
        statistics are part of the frozen features that every task's signature was fitted on, and a task's training
        batches would otherwise move them (old signatures go stale, the frozen features drift). A batch norm with a
        trainable parameter (`modules_to_save`) trains as usual."""
        super().train(mode)
        for module in self.model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                p.requires_grad for p in module.parameters()
            ):
                module.eval()
        return self

    def _unload_and_optionally_merge(self, *args, **kwargs):
        model = super()._unload_and_optionally_merge(*args, **kwargs)
        for hook in self._hooks:
            hook.remove()
        return model

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        key = super()._remove_adapter_name_from_key(key, adapter_name)
        return key.replace(f"cr_signatures.{adapter_name}.", "cr_signatures.", 1)

    @contextmanager
    def _enable_peft_forward_hooks(self, *args, **kwargs):
        """Receive PEFT's per-sample `adapter_names` (here: task names or indices) for the next forward pass."""
        self._requested_tasks = kwargs.get("adapter_names")
        try:
            yield
        finally:
            self._requested_tasks = None

    # ----------------------------------------------------------------------------------------------------------
    # Tasks and signatures

    @property
    def _adapter(self) -> str:
        return self.active_adapters[0]

    @property
    def task_names(self) -> list[str]:
        """The active adapter's tasks, in the order they were added."""
        return list(self.peft_config[self._adapter].task_names)

    def _layers(self, adapter: str) -> list[ClusterRetrievalLayer]:
        return [m for m in self.model.modules() if isinstance(m, ClusterRetrievalLayer) and adapter in m.cr_A]

    def add_task(self, name: str, adapter_name: str | None = None) -> None:
        """Start task `name`: freeze every earlier task and add a fresh low-rank pair (+ composition coefficients).

        The new task is the only trainable part of the adapter (plus `modules_to_save`), so earlier tasks stay
        bit-identical while it trains.
        """
        adapter = adapter_name or self._adapter
        config = self.peft_config[adapter]
        _check_task_name(name, adapter, config.task_names)
        config.task_names.append(name)
        for layer in self._layers(adapter):
            layer.add_task(adapter, name, self._adapter_dtype(adapter, layer))
        self._add_signature_slots(adapter)

    def _cast_adapter_dtype(self, adapter_name: str, autocast_adapter_dtype: bool = True) -> None:
        """PEFT's upcast of fp16/bf16 adapter weights to float32; remembered, so that tasks added later follow the
        same choice (`get_peft_model(..., autocast_adapter_dtype=False)` keeps them in the base model's dtype)."""
        self._autocast_adapter_dtype[adapter_name] = autocast_adapter_dtype
        super()._cast_adapter_dtype(adapter_name, autocast_adapter_dtype)

    def _adapter_dtype(self, adapter: str, layer: ClusterRetrievalLayer) -> torch.dtype:
        dtype = layer.get_base_layer().weight.dtype
        upcast = self._autocast_adapter_dtype.get(adapter, True) and dtype in (torch.float16, torch.bfloat16)
        return torch.float32 if upcast else dtype

    def _add_signature_slots(self, adapter: str) -> None:
        """Create zeroed signature buffers for tasks that have none yet, once the embedding size is known."""
        config = self.peft_config[adapter]
        if config.feature_dim is None:
            return
        full = config.signature_type == "class_gaussian" or (
            config.covariance_type == "full" and config.signature_type in ("dpgmm", "gmm")
        )
        device = next(self.model.parameters()).device
        for task in config.task_names:
            if task not in self.cr_signatures[adapter]:
                classes = len(config.task_classes.get(task, []))
                slots = SignatureBuffers(config.max_components, config.feature_dim, full, classes)
                self.cr_signatures[adapter][task] = slots.to(device)

    def set_signature(self, name: str, signature: TaskSignature, adapter_name: str | None = None) -> None:
        """Store `signature` as task `name`'s, e.g. one fitted with `hf_know.cluster_retrieval.fit_signature`."""
        adapter = adapter_name or self._adapter
        config = self.peft_config[adapter]
        self._task_index(adapter, name)
        if config.feature_dim is None:
            config.feature_dim = signature.feature_dim
            self._add_signature_slots(adapter)
        slots = self.cr_signatures[adapter][name]
        expected = (config.max_components, config.feature_dim, *slots.precision_cholesky.shape[2:])
        got = (signature.weights.shape[0], signature.feature_dim, *signature.precision_cholesky.shape[2:])
        if signature.feature_dim != config.feature_dim or got[0] > expected[0] or got[2:] != expected[2:]:
            raise ValueError(
                f"The signature for task {name!r} has {got[0]} components over {signature.feature_dim}-dimensional "
                f"features (precision {tuple(signature.precision_cholesky.shape)}), but this model's embeddings "
                f"are {config.feature_dim}-dimensional (feature_layer={config.feature_layer}, pooling="
                f"{config.pooling!r}) and it stores at most {config.max_components} components with "
                f"{'full' if len(expected) == 3 else 'diagonal'} precisions."
            )
        slots.store(signature)

    def signature(self, name: str, adapter_name: str | None = None) -> TaskSignature | None:
        """Task `name`'s signature, or None if none was fitted yet."""
        adapter = adapter_name or self._adapter
        self._task_index(adapter, name)
        if name not in self.cr_signatures[adapter] or not self.cr_signatures[adapter][name].fitted:
            return None
        return self.cr_signatures[adapter][name].signature()

    @torch.no_grad()
    def fit_signature(self, name: str, dataloader, adapter_name: str | None = None) -> TaskSignature:
        """Embed every batch of `dataloader` (dicts of model inputs; labels are ignored) and fit task `name`'s
        signature on the embeddings. Through the task's own module for `retrieval_space="task_adapted"`."""
        adapter = adapter_name or self._adapter
        config = self.peft_config[adapter]
        index = self._task_index(adapter, name)
        tasks = [index] if config.retrieval_space == "task_adapted" else None
        was_training = self.model.training
        self.model.eval()
        features, labels = [], []
        needs_labels = None  # the option that needs labels in the batches, named in the error without them
        if config.head == "lda":
            needs_labels = "head='lda'"
        elif config.signature_type == "class_gaussian":
            needs_labels = "signature_type='class_gaussian'"
        try:
            for batch in tqdm(dataloader, desc=f"signature of {name!r}", leave=False):
                inputs = self._as_inputs(batch, name)
                if needs_labels:
                    if "labels" not in inputs:
                        raise ValueError(
                            f"{needs_labels} fits class statistics in fit_signature({name!r}), so its batches need "
                            f"'labels'; got keys {sorted(inputs)}."
                        )
                    labels.append(inputs["labels"].flatten().cpu())
                features.append(self._embed(adapter, (), inputs, tasks)[0])
        finally:
            self.model.train(was_training)
        if not features:
            raise ValueError(f"fit_signature({name!r}) got an empty dataloader: no batch to embed.")
        signature = fit_signature(
            torch.cat(features),
            config.signature_type,
            max_components=config.max_components,
            covariance_type=config.covariance_type,
            reg_covar=config.reg_covar,
            labels=torch.cat(labels) if labels else None,
        )
        self.set_signature(name, signature, adapter)
        if config.head == "lda":
            classes, means, precision = fit_lda(torch.cat(features).cpu(), torch.cat(labels), config.lda_shrinkage)
            config.task_classes[name] = classes
            self.cr_signatures[adapter][name].store_lda(means, precision)
        return signature

    def _task_index(self, adapter: str, task: str) -> int:
        tasks = self.peft_config[adapter].task_names
        if task not in tasks:
            raise ValueError(f"Unknown task {task!r}: adapter {adapter!r} has tasks {tasks}; add it with add_task.")
        return tasks.index(task)

    def _as_inputs(self, batch, name: str) -> dict:
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"fit_signature({name!r}) needs batches that are dicts of model inputs (what transformers' data "
                f"collators yield), got a {type(batch).__name__}."
            )
        device = next(self.model.parameters()).device
        return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}

    def regularization_loss(self) -> torch.Tensor:
        """The training task's composition (L1, L2) and orthogonality penalties, averaged over layers.

        Added to `outputs.loss` automatically in training mode; call it yourself only if you compute the loss
        outside the model (no `labels` passed)."""
        device = next(self.model.parameters()).device
        total = torch.zeros((), device=device)
        for adapter in self.active_adapters:
            config = self.peft_config[adapter]
            layers = self._layers(adapter)
            if len(config.task_names) < 2 or not layers:
                continue
            terms = [layer.regularization(adapter) for layer in layers]
            l1, l2, ortho = (torch.stack(column).mean() for column in zip(*terms, strict=True))
            total = total + config.composition_l1 * l1 + config.composition_l2 * l2
            if config.ortho_mode == "penalty":
                total = total + config.ortho_lambda * ortho
        return total

    def _add_regularization(self, module: nn.Module, args: tuple, output):
        """Forward hook: in training mode, add the penalties to the model's loss, so any trainer applies them."""
        self._remove_pass_hooks()
        if self._embedding_pass or not module.training or not isinstance(output, ModelOutput):
            return output
        if output.get("loss") is not None:
            output["loss"] = output["loss"] + self.regularization_loss()
        return output


def _check_task_name(name, adapter: str, existing: list[str]) -> None:
    """Task names key parameter and buffer containers, so they must be identifiers that no container or module
    attribute already uses (`add_task("keys")` would shadow `ModuleDict.keys`), and unique."""
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(
            f"Task name {name!r} is not valid: expected an identifier-like string (letters, digits and '_', not "
            "starting with a digit), e.g. 'news' or 'task_1'."
        )
    if any(hasattr(container, name) for container in (nn.ParameterDict(), nn.ModuleDict())):
        raise ValueError(
            f"Task name {name!r} is the name of a PyTorch module attribute or method; tasks are stored under their "
            "names, so it would shadow it. Choose another name, e.g. 'task_" + name + "'."
        )
    if name in existing:
        raise ValueError(f"Duplicate task name {name!r}: adapter {adapter!r} already has tasks {existing}.")
