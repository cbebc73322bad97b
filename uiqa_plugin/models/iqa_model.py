"""IQAModel: trains and evaluates CLIP-IQA+ / CLIP-UIQA (any registered arch) on BasicSR's runner.

Differences from BasicSR's SRModel, each for a reason:
- validation collects the predictions of the WHOLE set (across ranks when distributed)
  and computes dataset-level metrics (SRCC/PLCC...), not per-image averages;
- checkpoints hold only what trains (the arch's state dict leaves the frozen CLIP out)
  plus the arch options, so a checkpoint rebuilds its model;
- SGD / AdamW and our schedulers (BasicSR 1.4.2 only knows Adam);
- DDP works on CPU (gloo) as on GPU.
"""
import csv
import os
import os.path as osp
from collections import OrderedDict
from copy import deepcopy

import torch
import torch.distributed as dist
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from uiqa_plugin.losses.combined import build_loss_set
from uiqa_plugin.metrics.iqa_metric import compute_metrics
from uiqa_plugin.optim import build_optimizer, build_scheduler

DEFAULT_METRICS = {'srcc': {'type': 'calculate_srcc'}, 'plcc': {'type': 'calculate_plcc'}}


def gather_objects(obj):
    """List of ``obj`` from every rank (just [obj] when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


@MODEL_REGISTRY.register()
class IQAModel(BaseModel):
    """Image quality model: ``network_g`` maps the views of a batch to scores (N, T)."""

    def __init__(self, opt):
        super().__init__(opt)
        self.net_g = build_network(deepcopy(opt['network_g']))
        self.views = list(getattr(self.net_g, 'views', ['image']))
        self.net_g = self.model_to_device(self.net_g)
        self.print_network(self.net_g)
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g, load_path, self.opt['path'].get('strict_load_g', True),
                              self.opt['path'].get('param_key_g', 'params'))
        if self.is_train:
            self.init_training_settings()

    # ------------------------------------------------------------------ set-up
    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            trainable = any(p.requires_grad for p in net.parameters())
            if trainable:
                device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
                # Buffers are constants (token ids, group indices): no need to broadcast them every step.
                net = DistributedDataParallel(net, device_ids=device_ids, broadcast_buffers=False,
                                              find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return net

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        self.loss_set = build_loss_set(train_opt).to(self.device)
        self.setup_optimizers()
        self.setup_schedulers()

    def setup_optimizers(self):
        train_opt = self.opt['train']
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        if not params:
            raise ValueError('network_g has nothing to train (a zero-shot CLIPIQA?): use uiqa_plugin/test.py for '
                             'evaluation, or choose prompt: learned / a regressor head')
        optim_opt = dict(train_opt['optim_g'])
        clip_lr = optim_opt.pop('clip_lr', None)  # fine-tuned CLIP parts often want a smaller lr
        bare = self.get_bare_model(self.net_g)
        clip_params = {id(p) for p in bare.clip_trainable.parameters()} if hasattr(bare, 'clip_trainable') else set()
        if clip_lr is not None and clip_params:
            params = [{'params': [p for p in params if id(p) not in clip_params]},
                      {'params': [p for p in params if id(p) in clip_params], 'lr': clip_lr}]
        self.optimizer_g = build_optimizer(params, optim_opt)
        self.optimizers.append(self.optimizer_g)

    def setup_schedulers(self):
        total_iter = self.opt['train'].get('total_iter')
        for optimizer in self.optimizers:
            self.schedulers.append(build_scheduler(optimizer, self.opt['train'].get('scheduler'), total_iter))

    # ------------------------------------------------------------------ data
    def feed_data(self, data):
        missing = [v for v in self.views if v not in data]
        if missing:
            raise KeyError(f'the batch has no views {missing} (has {sorted(k for k in data if torch.is_tensor(data[k]))}); '
                           f'the dataset options must produce the views of network_g: {self.views}')
        self.inputs = {v: data[v].to(self.device, non_blocking=True) for v in self.views}
        self.target = data['target'].to(self.device).float() if 'target' in data else None
        self.keys = list(data.get('key', []))

    def _match_target(self, pred):
        target = self.target
        if target.dim() == 1:
            target = target[:, None]
        if target.shape != pred.shape:
            raise ValueError(f'network output has shape {tuple(pred.shape)} but the targets {tuple(target.shape)}: '
                             'the number of score columns of the dataset must match the network outputs')
        return target

    # ------------------------------------------------------------------ training
    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad(set_to_none=True)
        pred = self.net_g(self.inputs)
        total, terms = self.loss_set(pred, self._match_target(pred))
        if not hasattr(self, 'grad_scaler'):  # fp16 gradients underflow unless the loss is scaled; a no-op otherwise
            fp16 = self.opt['network_g'].get('precision') == 'fp16'
            self.grad_scaler = torch.amp.GradScaler(self.device.type, enabled=fp16)
        self.grad_scaler.scale(total).backward()
        clip_norm = self.opt['train'].get('grad_clip_norm')
        if clip_norm:
            self.grad_scaler.unscale_(self.optimizer_g)
            torch.nn.utils.clip_grad_norm_(self.net_g.parameters(), clip_norm)
        self.grad_scaler.step(self.optimizer_g)
        self.grad_scaler.update()
        terms = OrderedDict(terms)
        terms['l_total'] = total.detach()
        self.log_dict = self.reduce_loss_dict(terms)

    def test(self):
        net = self.get_bare_model(self.net_g)
        was_training = net.training
        net.eval()
        with torch.no_grad():
            self.output = net(self.inputs)
        net.train(was_training)

    # ------------------------------------------------------------------ validation
    def dist_validation(self, dataloader, current_iter, tb_logger, save_img):
        self.nondist_validation(dataloader, current_iter, tb_logger, save_img)

    def predict_loader(self, dataloader, progress=True):
        """Predictions of this rank's share of ``dataloader``: (keys, preds (M, T), targets (M, T) or None)."""
        keys, preds, targets = [], [], []
        bar = tqdm(total=len(dataloader), desc='validation', unit='batch',
                   disable=not progress or self.opt['rank'] != 0)
        for data in dataloader:
            self.feed_data(data)
            self.test()
            out = self.output.float().cpu()
            preds.append(out)
            keys.extend(self.keys if self.keys else [str(len(keys) + i) for i in range(len(out))])
            if self.target is not None:
                targets.append(self._match_target(self.output).float().cpu())
            bar.update(1)
        bar.close()
        preds = torch.cat(preds) if preds else torch.empty(0, 1)
        return keys, preds, (torch.cat(targets) if targets else None)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        dataset = dataloader.dataset
        dataset_name = dataset.opt['name'] if hasattr(dataset, 'opt') else 'val'
        val_opt = self.opt.get('val') or {}
        keys, preds, targets = self.predict_loader(dataloader, progress=val_opt.get('pbar', True))
        shards = gather_objects((keys, preds, targets))
        if self.opt['rank'] != 0:
            return
        # Samplers may repeat samples to even out ranks: keep the first prediction of each key.
        merged = OrderedDict()
        for shard_keys, shard_preds, shard_targets in shards:
            for i, key in enumerate(shard_keys):
                if key not in merged:
                    merged[key] = (shard_preds[i], None if shard_targets is None else shard_targets[i])
        self.val_keys = list(merged)
        self.val_preds = torch.stack([p for p, _ in merged.values()]) if merged else torch.empty(0, 1)
        has_targets = all(t is not None for _, t in merged.values()) and len(merged) > 0
        self.val_targets = torch.stack([t for _, t in merged.values()]) if has_targets else None

        metrics_opt = val_opt.get('metrics') or DEFAULT_METRICS
        self.metric_results = {}
        if has_targets:
            metric_specs = {k: {kk: vv for kk, vv in v.items() if kk != 'better'} for k, v in metrics_opt.items()}
            self.metric_results = compute_metrics(self.val_preds[:, 0].numpy(), self.val_targets[:, 0].numpy(),
                                                  metric_specs)
        if val_opt.get('save_predictions', not self.is_train):
            self._save_predictions(dataset, dataset_name, current_iter)
        if self.metric_results and self.is_train:
            self._track_best(dataset_name, metrics_opt, current_iter)
        self._log_validation_metric_values(current_iter, dataset_name, tb_logger)

    def _track_best(self, dataset_name, metrics_opt, current_iter):
        if not hasattr(self, 'best_metric_results') or dataset_name not in self.best_metric_results:
            saved_opt = self.opt['val'].get('metrics')
            self.opt['val']['metrics'] = metrics_opt
            self._initialize_best_metric_results(dataset_name)
            self.opt['val']['metrics'] = saved_opt
        key_metric = self.opt['val'].get('key_metric', 'srcc' if 'srcc' in metrics_opt else next(iter(metrics_opt)))
        if key_metric not in self.metric_results:
            raise KeyError(f'val.key_metric {key_metric!r} is not among the validation metrics '
                           f'{list(self.metric_results)}')
        record = self.best_metric_results[dataset_name][key_metric]
        best_before = record['val']
        for name, value in self.metric_results.items():
            if value == value:  # NaN never becomes the best
                self._update_best_metric_result(dataset_name, name, value, current_iter)
        improved = record['val'] > best_before if record['better'] == 'higher' else record['val'] < best_before
        if improved and isinstance(current_iter, int):
            self.save_network(self.net_g, 'net_g', 'best')
            get_root_logger().info(f'New best {key_metric} on {dataset_name} at iter {current_iter}: '
                                   f'{self.metric_results[key_metric]:.4f} (saved net_g_best.pth)')

    def _save_predictions(self, dataset, dataset_name, current_iter):
        folder = self.opt['path'].get('results_root') or self.opt['path'].get('visualization') or '.'
        os.makedirs(folder, exist_ok=True)
        path = osp.join(folder, f'{dataset_name}_predictions_{current_iter}.csv')
        denorm = getattr(dataset, 'denormalize', None)
        preds = self.val_preds.numpy()
        with open(path, 'w', newline='', encoding='utf-8') as f:
            writer = csv.writer(f)
            header = ['key'] + [f'pred_{i}' for i in range(preds.shape[1])]
            if denorm is not None:
                header += [f'pred_{i}_original_scale' for i in range(preds.shape[1])]
            if self.val_targets is not None:
                header += [f'target_{i}' for i in range(self.val_targets.shape[1])]
            writer.writerow(header)
            original = denorm(preds) if denorm is not None else None
            for i, key in enumerate(self.val_keys):
                row = [key] + [f'{v:.6f}' for v in preds[i]]
                if original is not None:
                    row += [f'{v:.6f}' for v in original[i]]
                if self.val_targets is not None:
                    row += [f'{v:.6f}' for v in self.val_targets[i].tolist()]
                writer.writerow(row)
        self.predictions_path = path

    def _log_validation_metric_values(self, current_iter, dataset_name, tb_logger):
        lines = [f'Validation {dataset_name} ({len(self.val_keys)} images)']
        for name, value in self.metric_results.items():
            line = f'\t # {name}: {value:.4f}'
            best = getattr(self, 'best_metric_results', {}).get(dataset_name, {}).get(name)
            if best is not None:
                line += f'\tBest: {best["val"]:.4f} @ {best["iter"]} iter'
            lines.append(line)
            if tb_logger:
                tb_logger.add_scalar(f'metrics/{dataset_name}/{name}', value, current_iter)
        get_root_logger().info('\n'.join(lines))

    # ------------------------------------------------------------------ checkpoints
    def save(self, epoch, current_iter):
        self.save_network(self.net_g, 'net_g', current_iter)
        self.save_training_state(epoch, current_iter)

    def save_network(self, net, net_label, current_iter, param_key='params'):
        """Save what trains and the arch options that rebuild the network (never the frozen CLIP)."""
        if self.opt['rank'] != 0:
            return
        label = 'latest' if current_iter == -1 else current_iter
        path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        bare = self.get_bare_model(net)
        state = OrderedDict((k, v.detach().cpu()) for k, v in bare.state_dict().items())
        datasets = self.opt.get('datasets', {})
        view_options = next((d.get('views') for d in datasets.values() if isinstance(d, dict) and d.get('views')),
                            None)
        payload = {param_key: state, 'network_g': deepcopy(self.opt['network_g']),
                   'attribute_names': list(getattr(bare, 'attribute_names', [])),
                   'view_options': deepcopy(view_options)}  # lets uiqa-score build the same views
        tmp = path + '.tmp'
        torch.save(payload, tmp)
        os.replace(tmp, path)  # never a half-written checkpoint

    def get_current_log(self):
        return self.log_dict
