"""IQAModel: trains and evaluates CLIP-IQA+ / CLIP-UIQA (any registered arch) on BasicSR's runner.

Differences from BasicSR's SRModel, each for a reason:
- validation collects the predictions of the WHOLE set (across ranks when distributed)
  and computes dataset-level metrics (SRCC/PLCC...), not per-image averages;
- checkpoints hold only what trains (the arch's state dict leaves the frozen CLIP out)
  plus the arch options, so a checkpoint rebuilds its model;
- SGD / AdamW and our schedulers (BasicSR 1.4.2 only knows Adam);
- DDP works on CPU (gloo) as on GPU;
- every weight file is read with ``weights_only`` (checkpoint_io) and written atomically;
- ``gathers_validation``: each rank predicts its share of a validation set (the runner shards
  it) and rank 0 computes the metrics over all of them (BasicSR's models validate on rank 0);
- ``train.ema_decay``: an exponential moving average of the trainable parameters (BasicSR's
  ``net_g_ema``, here ``models.ema.ParameterEMA``), saved as ``params_ema`` and used for validation;
- test options may leave ``network_g`` out: the checkpoint's own arch options build it.
"""
import contextlib
import inspect
import os.path as osp
from collections import OrderedDict
from copy import deepcopy

import torch
from basicsr.archs import build_network
from basicsr.models.base_model import BaseModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from uiqa_plugin.checkpoint_format import (CLIP_PATH_KEYS, checkpoint_payload, missing_clip_message, missing_clip_paths,
                                           read_checkpoint)
from uiqa_plugin.checkpoint_io import CheckpointReadError, CheckpointWriteError, save_checkpoint
from uiqa_plugin.data.device_input import DeviceInput
from uiqa_plugin.data.transforms import CLIP_MEAN, CLIP_STD
from uiqa_plugin.losses.combined import build_loss_set
from uiqa_plugin.metrics.iqa_metric import DEFAULT_METRICS, compute_metrics
from uiqa_plugin.models.ema import ParameterEMA
from uiqa_plugin.models.prediction_table import validation_table, write_table
from uiqa_plugin.optim import build_optimizer, build_scheduler
from uiqa_plugin.rank_gather import gather_predictions
from uiqa_plugin.user_modules import recorded_imports

DDP_PARAMETERS = inspect.signature(DistributedDataParallel.__init__).parameters


@MODEL_REGISTRY.register()
class IQAModel(BaseModel):
    """Image quality model: ``network_g`` maps the views of a batch to scores (N, T)."""

    gathers_validation = True  # see uiqa_plugin.runner.model_contract

    def __init__(self, opt):
        super().__init__(opt)
        self.trust = bool(opt.get('trust_checkpoint') or opt['path'].get('trust_checkpoint'))
        self._pretrained = {}
        net_opt = self._network_options()
        self.net_g = build_network(deepcopy(net_opt))
        self.views = list(getattr(self.net_g, 'views', ['image']))
        self.net_g = self.model_to_device(self.net_g)
        self.print_network(self.net_g)
        self.ema = None
        load_path = self.opt['path'].get('pretrain_network_g')
        if load_path is not None:
            self.load_network(self.net_g, load_path, self.opt['path'].get('strict_load_g', True),
                              self.opt['path'].get('param_key_g'))
        if self.is_train:
            self.init_training_settings()

    def _read_checkpoint(self, path):
        if path not in self._pretrained:
            self._pretrained = {path: read_checkpoint(path, trust=self.trust)}  # options and weights checked
        return self._pretrained[path]

    def _network_options(self):
        """``network_g`` of the options; in testing, the checkpoint's own when the options lack or contradict it."""
        net_opt = self.opt.get('network_g')
        load_path = self.opt['path'].get('pretrain_network_g')
        if self.is_train or not load_path:
            if net_opt is None:
                raise ValueError('network_g: required (or path.pretrain_network_g pointing at one of our checkpoints)')
            return net_opt
        ckpt = self._read_checkpoint(load_path)
        stored = ckpt.get('network_g') if isinstance(ckpt, dict) else None
        if not isinstance(stored, dict):
            if net_opt is None:
                raise ValueError(f'network_g: required, {load_path} does not store its arch options')
            return net_opt
        logger = get_root_logger()
        chosen = deepcopy(stored)
        if net_opt is None:
            logger.info(f'network_g from the checkpoint {load_path}: {stored}')
        else:
            for key in CLIP_PATH_KEYS + ('quick_gelu',):  # where CLIP lives here may differ from training
                if key in net_opt:
                    chosen[key] = net_opt[key]
            differ = sorted(k for k in set(stored) | set(net_opt)
                            if k not in CLIP_PATH_KEYS + ('quick_gelu',) and stored.get(k) != net_opt.get(k))
            if differ:
                logger.warning(f'network_g of the options differs from the one stored in {load_path} in '
                               f'{differ}: using the checkpoint\'s ({stored})')
        missing = missing_clip_paths(chosen)
        if missing:
            raise ValueError(missing_clip_message(
                load_path, missing, 'set network_g.clip_model / network_g.clip_pretrained in the option file'))
        self.opt['network_g'] = chosen
        return chosen

    def load_network(self, net, load_path, strict=True, param_key=None):
        """Our weights (or a plain state dict) from ``load_path``, read without unpickling code.

        param_key: None picks ``params_ema`` in evaluation when present (what validation used), else ``params``.
        """
        logger = get_root_logger()
        net = self.get_bare_model(net)
        ckpt = self._read_checkpoint(load_path)
        if not isinstance(ckpt, dict):
            raise CheckpointReadError(f'{load_path}: not a state dict or checkpoint')
        if param_key is None:
            param_key = 'params_ema' if not self.is_train and 'params_ema' in ckpt else 'params'
        if param_key in ckpt:
            state = ckpt[param_key]
        elif param_key == 'params_ema' and 'params' in ckpt:
            logger.info('Loading: params_ema does not exist, use params.')
            param_key, state = 'params', ckpt['params']
        elif all(torch.is_tensor(v) for v in ckpt.values()):
            param_key, state = None, ckpt
        else:
            raise CheckpointReadError(f'{load_path}: has no {param_key!r} (keys: {sorted(ckpt)[:10]})')
        state = OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())
        logger.info(f'Loading {net.__class__.__name__} model from {load_path}, with param key: [{param_key}].')
        try:
            net.load_state_dict(state, strict=strict)
        except RuntimeError as exc:
            raise ValueError(f'{load_path}: its weights do not fit network_g ({exc}); with test options, leave '
                             'network_g out to build the network stored in the checkpoint') from exc
        self._pretrained = {}  # loaded: do not keep the file's tensors around
        if self.is_train and 'params_ema' in ckpt and param_key == 'params':
            self._resume_ema = ckpt['params_ema']

    # ------------------------------------------------------------------ set-up
    def model_to_device(self, net):
        net = net.to(self.device)
        if self.opt['dist']:
            trainable = any(p.requires_grad for p in net.parameters())
            if trainable:
                device_ids = [torch.cuda.current_device()] if self.device.type == 'cuda' else None
                # Buffers are constants (token ids, group indices): no need to broadcast them every step.
                # torch >= 2.13 names this forward_sync_buffers (broadcast_buffers warns once per rank).
                no_sync = ({'forward_sync_buffers': False} if 'forward_sync_buffers' in DDP_PARAMETERS
                           else {'broadcast_buffers': False})
                net = DistributedDataParallel(net, device_ids=device_ids, **no_sync,
                                              find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return net

    def init_training_settings(self):
        train_opt = self.opt['train']
        self.net_g.train()
        if train_opt.get('ema_decay', 0) > 0:
            bare = self.get_bare_model(self.net_g)
            self.ema = ParameterEMA(bare, train_opt['ema_decay'])
            ema_state = getattr(self, '_resume_ema', None)
            if ema_state is not None:  # resuming (or fine-tuning a run that kept an average)
                self.ema.load_state_dict(ema_state)
            self.net_g_ema = self.ema  # BasicSR's name
        self._resume_ema = None
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
        # uint8 views become float on the device; normalization the dataset left to the device happens here
        to_input = DeviceInput.from_batch(self.device, data)
        self.inputs = {v: to_input.convert(data[v].to(self.device, non_blocking=True)) for v in self.views}
        target = data.get('target')
        # An image folder without ratings has targets of width 0: predictions only, no metrics.
        has_target = torch.is_tensor(target) and target.numel() > 0
        self.target = target.to(self.device).float() if has_target else None
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
        if self.ema is not None:
            self.ema.update(self.get_bare_model(self.net_g))
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
            # without keys from the dataset, number the samples per rank: ranks must not give the same key
            prefix = f'rank{self.opt["rank"]}-' if self.opt.get('world_size', 1) > 1 else ''
            keys.extend(self.keys if self.keys else [f'{prefix}{len(keys) + i}' for i in range(len(out))])
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
        with self.ema.applied(self.get_bare_model(self.net_g)) if self.ema else contextlib.nullcontext():
            keys, preds, targets = self.predict_loader(dataloader, progress=val_opt.get('pbar', True))
        gathered = gather_predictions(keys, preds, targets)  # collective: every rank takes part
        if self.opt['rank'] != 0:  # rank 0 alone keeps the set's predictions: one writer of each table
            return
        self.val_keys, self.val_preds, self.val_targets = gathered
        has_targets = self.val_targets is not None

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
        path = osp.join(folder, f'{dataset_name}_predictions_{current_iter}.csv')
        self.predictions_path = write_table(path, *validation_table(self, dataset))

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

    def evaluation_preprocessing(self):
        """What turns an image file into the views in evaluation: the validation (else training) dataset's
        ``views``, ``resize``, ``mean``, ``std`` (or its explicit ``transforms`` list)."""
        datasets = self.opt.get('datasets') or {}
        ordered = [d for k, d in datasets.items() if k.split('_')[0] in ('val', 'test')] + [datasets.get('train')]
        for ds in ordered:
            if isinstance(ds, dict):
                plain = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
                return {'views': deepcopy(ds.get('views')), 'resize': deepcopy(ds.get('resize')),
                        'mean': plain(ds.get('mean', CLIP_MEAN)), 'std': plain(ds.get('std', CLIP_STD)),
                        'transforms': deepcopy(ds.get('transforms'))}
        return None

    def network_payload(self, net, param_key='params'):
        """The checkpoint dict: what trains, the arch options (absolute CLIP paths) and the preprocessing."""
        bare = self.get_bare_model(net)
        params = OrderedDict((k, v.detach().cpu()) for k, v in bare.state_dict().items())
        ema = self.ema.state_dict(bare) if self.ema is not None and net is self.net_g else None
        network_g = {**self.opt['network_g'], **getattr(bare, 'resolved_options', {})}  # e.g. the quick_gelu in use
        return checkpoint_payload(params, network_g, self.evaluation_preprocessing(), recorded_imports(self.opt),
                                  getattr(bare, 'attribute_names', []), params_ema=ema, param_key=param_key)

    def save_network(self, net, net_label, current_iter, param_key='params'):
        """Save what trains and the options that rebuild the network and its inputs (never the frozen CLIP)."""
        if self.opt['rank'] != 0:
            return
        label = 'latest' if current_iter == -1 else current_iter
        path = osp.join(self.opt['path']['models'], f'{net_label}_{label}.pth')
        self._write(self.network_payload(net, param_key), path, 'network')

    @staticmethod
    def _write(obj, path, what):
        try:
            save_checkpoint(obj, path)  # atomic: a kill leaves the previous file, never a truncated one
        except (OSError, RuntimeError) as exc:  # torch.save reports a full disk as a RuntimeError
            raise CheckpointWriteError.writing(what, path, exc) from exc

    def save_training_state(self, epoch, current_iter):
        """BasicSR's training state (epoch, iter, optimizers, schedulers), written atomically.

        The loop saves what an exact resume needs beside it (uiqa_plugin.runner.training_state).
        """
        if current_iter == -1 or self.opt['rank'] != 0:
            return
        state = {'epoch': epoch, 'iter': current_iter,
                 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        self._write(state, osp.join(self.opt['path']['training_states'], f'{current_iter}.state'), 'training state')

    def get_current_log(self):
        return self.log_dict
