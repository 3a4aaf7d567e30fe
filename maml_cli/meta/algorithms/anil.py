"""ANIL (Raghu et al. 2020, "Rapid learning or feature reuse?"): the inner loop adapts only the
head; the body is learned in the outer loop only. Because the body does not change during
adaptation, the support and query features are computed once per task and the inner loop runs
on the head alone, which is what makes it cheaper than MAML."""

from __future__ import annotations

from maml_cli.meta.algorithms.base import GradientBased
from maml_cli.meta.trees import partition
from maml_cli.models import HEAD


class ANIL(GradientBased):
    def task_functions(self, model_params, episode, forward: dict):
        head0, _ = partition(model_params, lambda path: path[0] == HEAD)
        net, loss = self.network, self.task_loss
        # Batch statistics of the body are those of the whole support (or query) set, as in MAML.
        support_features, _ = net.features(model_params, episode.support_x, **forward)
        query_features, _ = net.features(model_params, episode.query_x, **forward)

        def support(p, s):
            return loss.of_outputs(net.head(p[HEAD], support_features), episode.support_y), {}

        def predict(p, s):
            return net.head(p[HEAD], query_features)

        def query(p, s):
            outputs = predict(p, s)
            return loss.of_outputs(outputs, episode.query_y), (loss.metric_of_outputs(outputs, episode.query_y), {})

        return head0, support, query, predict
