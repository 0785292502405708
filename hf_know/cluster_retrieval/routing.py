"""Retrieval and routing of a `ClusterRetrievalModel` (PROTEUS, arXiv 2603.13235): embed inputs at the feature
layer, score them against the task signatures, and set each sample's routing weights before the layers run.

Frozen-backbone retrieval runs in a single pass wherever every adapted layer runs after the feature layer (the
adapters of a classifier head and of the blocks above it): the forward itself reads the hidden state at the feature
layer, routes from it, and the adapted layers further on use that routing. With adapted blocks below the feature
layer the forward shares its prefix: at the first adapted block it runs the frozen blocks up to the feature layer,
routes, and goes on. Otherwise (an adapted layer before the block stack, a forward that writes a generation cache,
or task-adapted retrieval) a separate embedding pass runs first.

`TaskRouting` is a mixin of the tuner: it reads the tuner's `peft_config`, `routing`, `model` and signatures.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn

from .embedding import (
    batch_size,
    block_stack,
    caches,
    continues_generation,
    embedding_inputs,
    feature_block,
    hidden_state_at,
    pool,
    repeat_batch,
)
from .head import lda_scores
from .signatures import StackedSignatures, TaskSignature, choose_tasks, retrieve


class TaskRouting:
    """Retrieval (`retrieve`, `embed`, `classify`) and the forward pre-hook that routes every sample (`_route`)."""

    @torch.no_grad()
    def retrieve(self, *args, adapter_name: str | None = None, **inputs) -> tuple[torch.Tensor, torch.Tensor]:
        """Retrieve each input's task from the signatures: `(task_indices [B], scores [B, m])`.

        Scores are the retrieval rule's (log-likelihoods, or minus squared distances; routing weights for
        `"soft"`), with -inf (0 for `"soft"`) for tasks that have no signature yet.
        """
        was_training = self.model.training
        self.model.eval()
        try:
            return self._retrieve(adapter_name or self._adapter, args, inputs)
        finally:
            self.model.train(was_training)

    @torch.no_grad()
    def embed(self, *args, task: str | int | None = None, adapter_name: str | None = None, **inputs) -> torch.Tensor:
        """The pooled embeddings [B, D] that signatures are fitted on and scored with: through `task`'s module
        (a name or index), or through the frozen backbone when `task` is None."""
        adapter = adapter_name or self._adapter
        tasks = None if task is None else [self._resolve_tasks(adapter, [task], 1).item()]
        was_training = self.model.training
        self.model.eval()
        try:
            return self._embed(adapter, args, inputs, tasks)[0]
        finally:
            self.model.train(was_training)

    def _retrieve(self, adapter: str, args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        found, scores, _ = self._retrieve_with_features(adapter, args, kwargs)
        return found, scores

    def _retrieve_with_features(self, adapter: str, args: tuple, kwargs: dict):
        """(task indices [B], scores [B, m], embeddings: {task index: [B, D]}, or {None: [B, D]} if frozen)."""
        config = self.peft_config[adapter]
        fitted = self._fitted(adapter)
        if not fitted:
            raise ValueError(
                f"No task of adapter {adapter!r} has a signature yet (tasks: {config.task_names}), so inputs "
                "cannot be routed without task ids: call fit_signature(task, dataloader) after training a task, "
                "or pass adapter_names=[...] with each sample's task."
            )
        space = fitted if config.retrieval_space == "task_adapted" else None
        with torch.no_grad():
            features = self._embed(adapter, args, kwargs, space)
        return self._scores(adapter, fitted, features, space)

    def _fitted(self, adapter: str) -> list[int]:
        slots = self.cr_signatures[adapter]
        return [
            i for i, task in enumerate(self.peft_config[adapter].task_names) if task in slots and slots[task].fitted
        ]

    def _scores(self, adapter: str, fitted: list[int], features: list[torch.Tensor], space):
        """Retrieval among the `fitted` tasks from embeddings (one per task in `space`, or one frozen)."""
        config = self.peft_config[adapter]
        options = dict(rule=config.retrieval_rule, temperature=config.retrieval_temperature)
        options["top_k"] = min(config.top_k, len(fitted))
        if space is None and config.retrieval_rule != "nearest_centroid":  # every forward: one batched pass
            found, scores = choose_tasks(
                self._stacked(adapter, fitted, features[0].dtype).log_likelihood(features[0]), **options
            )
        else:
            signatures = [self.signature(config.task_names[i], adapter) for i in fitted]
            found, scores = retrieve(features if space else features[0], signatures, **options)
        index = torch.tensor(fitted, device=found.device)
        fill = 0.0 if config.retrieval_rule == "soft" else float("-inf")
        full = scores.new_full((scores.shape[0], len(config.task_names)), fill)
        full[:, index] = scores
        by_task = dict(zip(fitted, features, strict=True)) if space else {None: features[0]}
        return index[found], full, by_task

    def _stacked(self, adapter: str, fitted: list[int], dtype: torch.dtype) -> StackedSignatures:
        """The fitted tasks' signatures stacked for batched scoring, rebuilt only when a signature buffer changed
        (`set_signature`, `load_state_dict` and `.to` all leave another version or storage)."""
        slots = [self.cr_signatures[adapter][self.peft_config[adapter].task_names[i]] for i in fitted]
        dtype = torch.float64 if dtype == torch.float64 else torch.float32
        key = (tuple(fitted), dtype, tuple((b.data_ptr(), b._version) for s in slots for b in s.buffers()))
        cached = self._stacked_signatures.get(adapter)
        if cached is None or cached[0] != key:
            padded = [TaskSignature(s.weights, s.means, s.precision_cholesky) for s in slots]
            cached = self._stacked_signatures[adapter] = (key, StackedSignatures.of(padded, dtype))
        return cached[1]

    @torch.no_grad()
    def classify(self, *args, adapter_names=None, adapter_name: str | None = None, **inputs) -> torch.Tensor:
        """Logits [B, num_classes] of the rehearsal-free LDA head (`head="lda"`): each input is routed (retrieval,
        or `adapter_names`) and scored against its task's class means with its task's shrunk within-class
        covariance, in that task's embedding space; classes of other tasks get -inf. No classifier is trained."""
        adapter = adapter_name or self._adapter
        config = self.peft_config[adapter]
        if config.head != "lda" or not config.task_classes:
            raise ValueError(
                "classify needs head='lda' and at least one fitted task (fit_signature with labels); this adapter "
                f"has head={config.head!r} and class statistics for {sorted(config.task_classes)}."
            )
        was_training = self.model.training
        self.model.eval()
        try:
            if adapter_names is None:
                found, _, features = self._retrieve_with_features(adapter, args, inputs)
            else:
                found = self._resolve_tasks(adapter, adapter_names, batch_size(args, inputs))
                needed = found.unique().tolist() if config.retrieval_space == "task_adapted" else None
                embedded = self._embed(adapter, args, inputs, needed)
                features = dict(zip(needed, embedded, strict=True)) if needed else {None: embedded[0]}
        finally:
            self.model.train(was_training)
        num_classes = 1 + max(c for classes in config.task_classes.values() for c in classes)
        logits = torch.full((found.shape[0], num_classes), float("-inf"), dtype=torch.float64)
        for task in found.unique().tolist():
            name = config.task_names[task]
            if name not in config.task_classes:
                raise ValueError(f"Task {name!r} has no LDA statistics: fit_signature it with labels.")
            rows = (found == task).nonzero().flatten().cpu()
            slots = self.cr_signatures[adapter][name]
            space = features[task] if task in features else features[None]
            embedded = space[rows.to(space.device)].cpu()
            scores = lda_scores(embedded, slots.class_means.cpu(), slots.lda_precision.cpu())
            logits[rows.unsqueeze(-1), torch.tensor(config.task_classes[name])] = scores
        return logits

    def _routing_weights(
        self, adapter: str, module: nn.Module, args: tuple, kwargs: dict, requested
    ) -> torch.Tensor | tuple[nn.Module, bool, list[nn.Module]] | None:
        """[B, m] routing weights; or the point where this forward will route itself (`_single_pass_point`); or
        None when the adapter has no task."""
        config = self.peft_config[adapter]
        m = len(config.task_names)
        if m == 0:
            return None
        batch = batch_size(args, kwargs)
        device = next(self.model.parameters()).device
        if requested is not None:
            ids = self._resolve_tasks(adapter, requested, batch)
            return nn.functional.one_hot(ids.to(device), m).float()
        if module.training or m == 1:  # the task being trained; or the only task, which needs no retrieval
            return torch.zeros(batch, m, device=device).index_fill_(1, torch.tensor([m - 1], device=device), 1.0)
        previous = (self.routing.weights or {}).get(adapter)
        if continues_generation(kwargs) and previous is not None and previous.shape[0] == batch:
            return previous  # a decoding step after the prompt: keep the prompt's routing
        if self._fitted(adapter) and (point := self._single_pass_point(adapter, kwargs)) is not None:
            return point  # routed inside this forward, at the feature layer (`_route_in_pass`)
        found, scores = self._retrieve(adapter, args, kwargs)
        return self._weights_from(adapter, found, scores)

    def _weights_from(self, adapter: str, found: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.peft_config[adapter].retrieval_rule == "soft":
            return scores.float()
        return nn.functional.one_hot(found, len(self.peft_config[adapter].task_names)).float()

    def _single_pass_point(self, adapter: str, kwargs: dict) -> tuple[nn.Module, bool, list[nn.Module]] | None:
        """Where this forward can route `adapter` from the frozen hidden state at the feature layer, as (module,
        read its input, prefix blocks), or None when it cannot (retrieval is task-adapted, an adapted layer runs
        before the block stack, or an adapted block below the feature layer would write a generation cache twice).

        With every adapted layer after the feature point (in registration order, which is execution order for
        transformers models and sequential CNNs) the hidden state is read there, prefix empty. Otherwise, at the
        input of the first adapted block b, the frozen blocks b..feature layer run once more (the shared prefix:
        embeddings and blocks below b run once for both)."""
        config = self.peft_config[adapter]
        if config.retrieval_space != "frozen_backbone":
            return None
        key = (adapter, config.feature_layer)
        if key not in self._pass_points:  # the model's structure is read once per adapter and feature layer
            self._pass_points[key] = self._pass_point(adapter, config.feature_layer)
        point = self._pass_points[key]
        return None if point is None or (point[2] and not self._ensure_no_cache(kwargs)) else point

    def _pass_point(self, adapter: str, feature_layer: int) -> tuple[nn.Module, bool, list[nn.Module]] | None:
        _, _, blocks = block_stack(self.model)
        layer = feature_block(len(blocks), feature_layer)
        order = {module: i for i, (_, module) in enumerate(self.model.named_modules())}
        if layer < len(blocks):
            point, start = blocks[layer], order[blocks[layer]]
        else:
            point, start = blocks[-1], max(order[m] for m in blocks[-1].modules()) + 1
        adapted = [order[m] for m in self._layers(adapter)]
        if not adapted:
            return None
        if min(adapted) >= start:
            return point, layer < len(blocks), []
        first = [i for i, block in enumerate(blocks) if order[block] <= min(adapted)]
        return (blocks[first[-1]], True, list(blocks[first[-1] : layer])) if first else None

    def _ensure_no_cache(self, kwargs: dict) -> bool:
        """Whether this forward writes no generation cache, so that blocks may run twice: it is given no cache, and
        `use_cache=False` is passed, or the model cannot generate. A model that cannot generate but still builds a
        cache (a sequence classifier on a decoder, whose config says `use_cache`) is then passed `use_cache=False`:
        nobody reads that cache, and blocks run twice would fill it twice."""
        if caches(kwargs):
            return False
        if kwargs.get("use_cache") is not None:
            return kwargs["use_cache"] is False
        can_generate = getattr(self.model, "can_generate", None)
        if callable(can_generate) and can_generate():
            return False
        if "use_cache" in inspect.signature(self.model.forward).parameters:
            kwargs["use_cache"] = False  # `_route` returns these kwargs to the forward
        return True

    def _route_in_pass(self, points: dict[str, tuple[nn.Module, bool, list[nn.Module]]], kwargs: dict) -> None:
        """Hook each adapter's feature point (`_single_pass_point`) for this forward: the frozen hidden state at the
        feature layer (read there, or computed by running the prefix blocks with the adapters off) is pooled,
        scored against the signatures and becomes the routing of the adapted layers that run after the hook."""
        mask = kwargs.get("attention_mask")
        for adapter, (point, read_input, prefix) in points.items():

            def route(hidden, adapter=adapter):
                pooled = self._pooled(adapter, hidden, mask).detach()
                index, scores, _ = self._scores(adapter, self._fitted(adapter), [pooled], None)
                self.routing.weights[adapter] = self._weights_from(adapter, index, scores)

            def from_prefix(module, args, kw, route=route, prefix=prefix):
                if self._prefix_running:  # the hooked block itself, run by the prefix below
                    return
                hidden = args[0] if args else kw["hidden_states"]
                saved, self.routing.weights, self._prefix_running = self.routing.weights, {}, True
                try:
                    for block in prefix:
                        out = block(hidden, *args[1:], **kw) if args else block(**{**kw, "hidden_states": hidden})
                        hidden = out[0] if isinstance(out, tuple | list) else out
                finally:
                    self.routing.weights, self._prefix_running = saved, False
                route(hidden)

            if prefix:
                hook = point.register_forward_pre_hook(from_prefix, with_kwargs=True)
            elif read_input:
                hook = point.register_forward_pre_hook(
                    lambda module, args, kw, route=route: route(args[0] if args else kw["hidden_states"]),
                    with_kwargs=True,
                )
            else:
                hook = point.register_forward_hook(
                    lambda module, args, out, route=route: route(out[0] if isinstance(out, tuple | list) else out)
                )
            self._pass_hooks.append(hook)

    def _remove_pass_hooks(self) -> None:
        while self._pass_hooks:
            self._pass_hooks.pop().remove()

    def _resolve_tasks(self, adapter: str, requested, batch: int) -> torch.Tensor:
        tasks = self.peft_config[adapter].task_names
        values = requested.tolist() if torch.is_tensor(requested) else list(requested)
        if len(values) != batch:
            raise ValueError(f"adapter_names has {len(values)} entries for a batch of {batch}: give one per sample.")
        ids = []
        for value in values:
            if isinstance(value, str):
                ids.append(self._task_index(adapter, value))
            elif isinstance(value, int) and 0 <= value < len(tasks):
                ids.append(value)
            else:
                raise ValueError(
                    f"Task id {value!r} is out of range: adapter {adapter!r} has {len(tasks)} tasks {tasks}; "
                    f"expected a task name or an index in [0, {len(tasks) - 1}]."
                )
        return torch.tensor(ids)

    def _route(self, module: nn.Module, args: tuple, kwargs: dict):
        """Forward pre-hook on the wrapped model: set every sample's routing weights before the layers run."""
        # `adapter_names` reaches the wrapped model itself when the tuner is called directly, not via PeftModel
        requested = kwargs.pop("adapter_names", None)
        requested = self._requested_tasks if requested is None else requested
        self._remove_pass_hooks()  # a forward that raised may have left its hooks
        if self._embedding_pass or not self._adapters_enabled:
            return args, kwargs
        weights = {
            adapter: self._routing_weights(adapter, module, args, kwargs, requested) for adapter in self.active_adapters
        }
        self.routing.weights = {a: w for a, w in weights.items() if torch.is_tensor(w)}
        self._route_in_pass({a: w for a, w in weights.items() if isinstance(w, tuple)}, kwargs)
        return args, kwargs

    def _embed(self, adapter: str, args: tuple, kwargs: dict, tasks: list[int] | None) -> list[torch.Tensor]:
        """Pooled embeddings at `feature_layer`: one [B, D] per task in `tasks` (the batch goes through each task's
        module, all copies in one forward pass cut after the feature layer), or a single one through the frozen
        backbone if `tasks` is None."""
        config = self.peft_config[adapter]
        kwargs = embedding_inputs(self.model, kwargs)
        batch = batch_size(args, kwargs)
        copies = len(tasks) if tasks else 1
        if copies > 1:
            args = tuple(repeat_batch(v, copies, batch) for v in args)
            kwargs = {k: repeat_batch(v, copies, batch) for k, v in kwargs.items()}
        weights = {}
        if tasks:
            ids = torch.tensor(tasks, device=next(self.model.parameters()).device).repeat_interleave(batch)
            weights = {adapter: nn.functional.one_hot(ids, len(config.task_names)).float()}
        saved, self.routing.weights, self._embedding_pass = self.routing.weights, weights, True
        try:
            with hidden_state_at(self.model, config.feature_layer) as captured:
                self.model(*args, **kwargs)
        finally:
            self.routing.weights, self._embedding_pass = saved, False
        return list(self._pooled(adapter, captured["hidden"], kwargs.get("attention_mask")).split(batch))

    def _pooled(self, adapter: str, hidden: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """The [B, D] float32 embedding of hidden states at the feature layer: pooled, L2-normalised if configured."""
        config = self.peft_config[adapter]
        pooled = pool(hidden, attention_mask, config.pooling)
        if config.feature_normalize:
            pooled = nn.functional.normalize(pooled.float(), dim=-1)
        return pooled.float()
