"""BasicSR's training loop, made safe to interrupt and to resume exactly.

Differences from ``basicsr.train.train_pipeline``'s loop: training states are completed with
the loop's own state (``training_state.save_loop_state``: random states, position in the
epoch, best record); a resume continues at the next batch of the interrupted epoch with the
random numbers the uninterrupted run would have drawn; validation runs before the save of the
same iteration (so a state holds the record of that validation); the last iteration is
``total_iter`` and is validated once. Everything the loop asks of a model is BasicSR's
interface (see ``model_contract``).
"""
import datetime
import time

from uiqa_plugin.option_error import OptionError
from uiqa_plugin.runner.model_contract import restore_best_record
from uiqa_plugin.runner.random_states import rng_state, set_rng_state
from uiqa_plugin.runner.training_state import LoopState, load_loop_state, resume_loader, save_loop_state


class MessageLogger:
    """BasicSR's training log line, with an ETA that ends at 0:00:00 (BasicSR's goes to -1 day)."""

    def __init__(self, opt, start_iter, logger, tb_logger=None):
        self.exp_name = opt['name']
        self.max_iters = int(opt['train']['total_iter'])
        self.start_iter = start_iter
        self.use_tb_logger = opt['logger'].get('use_tb_logger') and tb_logger is not None
        self.tb_logger = tb_logger
        self.start_time = time.time()
        self.logger = logger

    def __call__(self, log_vars):
        if log_vars.pop('rank', 0) != 0:
            return
        epoch, current_iter, lrs = log_vars.pop('epoch'), log_vars.pop('iter'), log_vars.pop('lrs')
        message = f'[{self.exp_name[:5]}..][epoch:{epoch:3d}, iter:{current_iter:8,d}, lr:('
        message += ''.join(f'{v:.3e},' for v in lrs) + ')] '
        if 'time' in log_vars:
            iter_time, data_time = log_vars.pop('time'), log_vars.pop('data_time')
            per_iter = (time.time() - self.start_time) / max(current_iter - self.start_iter, 1)
            eta = datetime.timedelta(seconds=int(per_iter * max(self.max_iters - current_iter, 0)))
            message += f'[eta: {eta}, time (data): {iter_time:.3f} ({data_time:.3f})] '
        for key, value in log_vars.items():
            message += f'{key}: {value:.4e} '
            if self.use_tb_logger and 'debug' not in self.exp_name:
                self.tb_logger.add_scalar(f'losses/{key}' if key.startswith('l_') else key, value, current_iter)
        self.logger.info(message)


def check_prefetch_mode(dataset_opt):
    """BasicSR's check: ``prefetch_mode: cuda`` needs ``pin_memory: true``; anything else than cpu/cuda is refused."""
    mode = dataset_opt.get('prefetch_mode')
    if mode not in (None, 'cpu', 'cuda'):
        raise OptionError(f'datasets.train.prefetch_mode: {mode!r}; use cpu, cuda or leave it out')
    if mode == 'cuda' and dataset_opt.get('pin_memory') is not True:
        raise OptionError('datasets.train.prefetch_mode: cuda needs datasets.train.pin_memory: true '
                          '(the CUDA prefetcher copies from pinned memory)')
    return mode


def epoch_iterator(loader, prefetch_mode, opt):
    from basicsr.data.prefetch_dataloader import CPUPrefetcher, CUDAPrefetcher
    prefetcher = CUDAPrefetcher(loader, opt) if prefetch_mode == 'cuda' else CPUPrefetcher(loader)
    prefetcher.reset()
    return prefetcher


def train_loop(opt, model, train_loader, train_sampler, val_loaders, total_iters, resume_state, tb_logger, logger):
    """Train ``model`` to ``total_iters``, validating, saving and logging as BasicSR's loop does."""
    from basicsr.utils import AvgTimer
    epoch, current_iter, replay = 0, 0, 0
    loader, loop = train_loader, LoopState()
    if resume_state:
        model.resume_training(resume_state)
        epoch, current_iter = resume_state['epoch'], resume_state['iter']
        loop = load_loop_state(opt, resume_state, logger)
        restore_best_record(model, loop.best_metric_results)
        logger.info(f'Resuming training from epoch: {epoch}, iter: {current_iter}.')
        if loop.exact:
            loader, replay = resume_loader(train_loader, loop.batches_in_epoch, epoch, logger)
        else:
            loop.batches_in_epoch = 0
    msg_logger = MessageLogger(opt, current_iter, logger, tb_logger)
    prefetch_mode = check_prefetch_mode(opt['datasets']['train'])
    if prefetch_mode == 'cuda':
        logger.info('Use cuda prefetch dataloader')
    val_opt = opt.get('val')
    val_freq = val_opt['val_freq'] if val_opt else None
    save_freq = opt['logger']['save_checkpoint_freq']
    logger.info(f'Start training from epoch: {epoch}, iter: {current_iter}')
    data_timer, iter_timer = AvgTimer(), AvgTimer()
    start_time = time.time()
    validated_at = None
    first_epoch = True
    while current_iter < total_iters:
        train_sampler.set_epoch(epoch)
        if first_epoch and loop.exact:
            epoch_rng = loop.epoch_rng
            if replay:  # the workers' seeds are drawn from the epoch-start state
                set_rng_state(epoch_rng)
            prefetcher = epoch_iterator(loader, prefetch_mode, opt)
            for _ in range(replay):
                prefetcher.next()
            set_rng_state(loop.rng)
            batches_in_epoch = loop.batches_in_epoch
        else:
            epoch_rng = rng_state()
            prefetcher = epoch_iterator(train_loader, prefetch_mode, opt)
            batches_in_epoch = 0
        first_epoch = False
        train_data = prefetcher.next()
        while train_data is not None and current_iter < total_iters:
            data_timer.record()
            current_iter += 1
            batches_in_epoch += 1
            model.update_learning_rate(current_iter, warmup_iter=opt['train'].get('warmup_iter', -1))
            model.feed_data(train_data)
            model.optimize_parameters(current_iter)
            iter_timer.record()
            if current_iter % opt['logger']['print_freq'] == 0:
                log_vars = {'rank': opt['rank'], 'epoch': epoch, 'iter': current_iter,
                            'lrs': model.get_current_learning_rate(),
                            'time': iter_timer.get_avg_time(), 'data_time': data_timer.get_avg_time()}
                log_vars.update(model.get_current_log())
                msg_logger(log_vars)
            if val_freq and current_iter % val_freq == 0:
                for val_loader in val_loaders:
                    model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
                validated_at = current_iter
            if current_iter % save_freq == 0:
                logger.info('Saving models and training states.')
                save_loop_state(opt, model, epoch, current_iter, batches_in_epoch, epoch_rng)  # first: see its module
                model.save(epoch, current_iter)
            data_timer.start()
            iter_timer.start()
            train_data = prefetcher.next() if current_iter < total_iters else None
        if current_iter < total_iters:
            epoch += 1
            if batches_in_epoch == 0:
                raise RuntimeError('the training set gives no batch (fewer samples than batch_size_per_gpu?)')
    logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - start_time))}')
    logger.info('Save the latest model.')
    model.save(epoch=-1, current_iter=-1)  # -1 stands for the latest
    if val_opt and validated_at != current_iter:
        for val_loader in val_loaders:
            model.validation(val_loader, current_iter, tb_logger, opt['val']['save_img'])
