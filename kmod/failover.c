// SPDX-License-Identifier: GPL-2.0
/*
 * failover.ko: the kernel-held failover type and state of seed 004 [0093]-[0098].
 *
 * /dev/failover holds failover_type and failover_state, changes them only along the edges of
 * Fig. 5 (include/uapi/linux/failover_fsm.h, the table libfo's userspace backend uses too),
 * sends a real-time signal to every registered process on each change, and watches critical
 * processes: when one dies or closes its descriptor without unregistering, the server moves
 * to FOSTATE_FAILED and the kernel sends the prebuilt failover message to the partner, so the
 * partner learns of it even when no process of this server is left to tell it.
 *
 * A critical death is seen at the earliest of two points: the start of the teardown of the
 * process's address space (an mmu_notifier release, called before exit_mmap unmaps anything,
 * so a large daemon's teardown does not delay the failover) and the close of its descriptor
 * (flush, which also covers close() without unregister and the rare process whose address
 * space outlives it).
 *
 * Locking: fo_lock guards the state, the registrations and the notifications, so that
 * signals go out in the order of the changes. fo_msg_lock (taken inside fo_lock) guards the
 * prebuilt message and its socket. The message is sent from the context that sees the death
 * (process context: the dying task's exit_mmap or close, no locks of the mm held); a send that
 * fails there is retried once from a high-priority workqueue.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/capability.h>
#include <linux/fs.h>
#include <linux/in.h>
#include <linux/list.h>
#include <linux/miscdevice.h>
#include <linux/mmu_notifier.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/nsproxy.h>
#include <linux/pid.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/signal.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>
#include <net/net_namespace.h>

#include "include/uapi/linux/failover.h"
#include "include/uapi/linux/failover_fsm.h"

/* One per open descriptor. */
struct fo_client {
	struct list_head node;		/* on fo_clients while registered */
	struct pid *owner;		/* thread group that registered, NULL if none */
	struct mmu_notifier *mn;	/* on the owner's mm while registered critical */
	u32 flags;			/* FO_REG_* */
	int signo;
};

static DEFINE_MUTEX(fo_lock);
static LIST_HEAD(fo_clients);
static u8 fo_type = FOTYPE_UNDEF;
static u8 fo_state = FOSTATE_UNDEF;
static u8 fo_last_cause = FO_CAUSE_NONE;
static u64 fo_generation;
static unsigned int fo_nr_registered;
static unsigned int fo_nr_critical;
static u64 fo_signals_dropped;
static u64 fo_critical_deaths;

static DEFINE_MUTEX(fo_msg_lock);
static struct socket *fo_msg_sock;	/* connected to the partner */
static struct net *fo_msg_net;		/* held: the socket does not pin its namespace */
static u8 fo_msg_payload[FO_MESSAGE_MAX];
static u16 fo_msg_len;
static bool fo_msg_armed;
static bool fo_msg_pending;
static u64 fo_msg_sent;
static u64 fo_msg_errors;

static struct workqueue_struct *fo_wq;

/*
 * Sends the armed message; on success it is disarmed: sent once, so that an old message is
 * never replayed after a recovery. Non-blocking, kernel memory only, no use of current->mm:
 * safe from the teardown of a dying process.
 */
static int fo_msg_send_locked(void)
{
	struct msghdr mh = { .msg_flags = MSG_DONTWAIT | MSG_NOSIGNAL };
	struct kvec iov = { .iov_base = fo_msg_payload, .iov_len = fo_msg_len };
	int ret;

	lockdep_assert_held(&fo_msg_lock);
	ret = kernel_sendmsg(fo_msg_sock, &mh, &iov, 1, fo_msg_len);
	if (ret != fo_msg_len)
		return ret < 0 ? ret : -EIO;
	fo_msg_sent++;
	fo_msg_armed = false;
	return 0;
}

/* The one retry of a send that failed in the dying process's context. */
static void fo_send_workfn(struct work_struct *work)
{
	mutex_lock(&fo_msg_lock);
	if (fo_msg_pending && fo_msg_armed && fo_msg_sock && fo_msg_send_locked()) {
		fo_msg_errors++;
		fo_msg_armed = false;
	}
	fo_msg_pending = false;
	mutex_unlock(&fo_msg_lock);
}

static DECLARE_WORK(fo_send_work, fo_send_workfn);

static void fo_notify_locked(void)
{
	u64 val = FO_SIGVAL(fo_type, fo_state, fo_last_cause, fo_generation);
	struct kernel_siginfo info;
	struct task_struct *task;
	struct fo_client *c;

	lockdep_assert_held(&fo_lock);
	list_for_each_entry(c, &fo_clients, node) {
		if (!(c->flags & FO_REG_NOTIFY))
			continue;
		clear_siginfo(&info);
		info.si_signo = c->signo;
		info.si_code = FO_SI_CODE;
		info.si_value.sival_ptr = (void __user *)(uintptr_t)val;
		rcu_read_lock();
		task = pid_task(c->owner, PIDTYPE_TGID);
		/* EAGAIN: the receiver's real-time queue is full; it sees the generation gap */
		if (task && send_sig_info(c->signo, &info, task))
			fo_signals_dropped++;
		rcu_read_unlock();
	}
}

static void fo_change_locked(u8 type, u8 state, u8 cause)
{
	lockdep_assert_held(&fo_lock);
	fo_type = type;
	fo_state = state;
	fo_last_cause = cause;
	fo_generation++;
	fo_notify_locked();
}

static void fo_unregister_locked(struct fo_client *c)
{
	lockdep_assert_held(&fo_lock);
	if (!c->owner)
		return;
	/* allowed from the notifier's own release callback (mm/mmu_notifier.c) */
	if (c->mn)
		mmu_notifier_put(c->mn);
	c->mn = NULL;
	list_del_init(&c->node);
	fo_nr_registered--;
	if (c->flags & FO_REG_CRITICAL)
		fo_nr_critical--;
	put_pid(c->owner);
	c->owner = NULL;
	c->flags = 0;
}

/* A critical process is gone without unregistering: fail the server, tell the partner. */
static void fo_critical_death_locked(struct fo_client *c)
{
	lockdep_assert_held(&fo_lock);
	fo_unregister_locked(c);
	fo_critical_deaths++;
	if (fo_state == FOSTATE_FAILED)
		return;
	if (WARN_ON_ONCE(!fo_fsm_find(fo_type, fo_state, fo_type, FOSTATE_FAILED)))
		return;
	/*
	 * The message first, at once: it is what the partner waits for, and a hop through a
	 * worker can wait for the dying process's teardown (no preemption point on one CPU).
	 * A failed send (no buffer in a dying task) is retried from the workqueue.
	 */
	mutex_lock(&fo_msg_lock);
	if (fo_msg_armed && fo_msg_sock && fo_msg_send_locked()) {
		fo_msg_pending = true;
		queue_work(fo_wq, &fo_send_work);
	}
	mutex_unlock(&fo_msg_lock);
	fo_change_locked(fo_type, FOSTATE_FAILED, FO_CAUSE_CRITICAL);
}

static struct mmu_notifier *fo_mn_alloc(struct mm_struct *mm)
{
	struct mmu_notifier *mn = kzalloc(sizeof(*mn), GFP_KERNEL);

	return mn ? mn : ERR_PTR(-ENOMEM);
}

static void fo_mn_free(struct mmu_notifier *mn)
{
	kfree(mn);
}

/* The address space of a registered process is being torn down: the process is gone. */
static void fo_mn_release(struct mmu_notifier *mn, struct mm_struct *mm)
{
	struct fo_client *c, *tmp;

	mutex_lock(&fo_lock);
	list_for_each_entry_safe(c, tmp, &fo_clients, node) {
		if (c->mn == mn && (c->flags & FO_REG_CRITICAL))
			fo_critical_death_locked(c);
	}
	mutex_unlock(&fo_lock);
}

static const struct mmu_notifier_ops fo_mn_ops = {
	.release = fo_mn_release,
	.alloc_notifier = fo_mn_alloc,
	.free_notifier = fo_mn_free,
};

static int fo_open(struct inode *inode, struct file *file)
{
	struct fo_client *c = kzalloc(sizeof(*c), GFP_KERNEL);

	if (!c)
		return -ENOMEM;
	INIT_LIST_HEAD(&c->node);
	file->private_data = c;
	return stream_open(inode, file);
}

/*
 * Called on every close of a descriptor of this file, by whichever process closes it, and for
 * every open descriptor when a process exits or execs over O_CLOEXEC descriptors. A close by
 * the registering thread group ends its registration, even if a forked child keeps a copy:
 * that is what makes the death of the registered process visible.
 */
static int fo_flush(struct file *file, fl_owner_t id)
{
	struct fo_client *c = file->private_data;

	mutex_lock(&fo_lock);
	if (c->owner && c->owner == task_tgid(current)) {
		if (c->flags & FO_REG_CRITICAL)
			fo_critical_death_locked(c);
		else
			fo_unregister_locked(c);
	}
	mutex_unlock(&fo_lock);
	return 0;
}

static int fo_release(struct inode *inode, struct file *file)
{
	struct fo_client *c = file->private_data;

	mutex_lock(&fo_lock);
	if (c->flags & FO_REG_CRITICAL)
		fo_critical_death_locked(c);
	else
		fo_unregister_locked(c);
	mutex_unlock(&fo_lock);
	kfree(c);
	return 0;
}

static int fo_get_status(void __user *argp)
{
	struct fo_status st;

	memset(&st, 0, sizeof(st));
	st.version = FO_API_VERSION;
	mutex_lock(&fo_lock);
	st.type = fo_type;
	st.state = fo_state;
	st.last_cause = fo_last_cause;
	st.generation = fo_generation;
	st.registered = fo_nr_registered;
	st.critical = fo_nr_critical;
	st.signals_dropped = fo_signals_dropped;
	st.critical_deaths = fo_critical_deaths;
	mutex_unlock(&fo_lock);
	mutex_lock(&fo_msg_lock);
	st.flags = fo_msg_armed ? FO_STATUS_MESSAGE_ARMED : 0;
	st.messages_sent = fo_msg_sent;
	st.message_errors = fo_msg_errors;
	mutex_unlock(&fo_msg_lock);
	return copy_to_user(argp, &st, sizeof(st)) ? -EFAULT : 0;
}

static int fo_set_state(void __user *argp)
{
	struct fo_transition t;
	int ret = 0;

	if (!capable(CAP_NET_ADMIN))
		return -EPERM;
	if (copy_from_user(&t, argp, sizeof(t)))
		return -EFAULT;
	if (t.flags & ~FO_TRANSITION_EXPECT || t.reserved)
		return -EINVAL;
	if (!fo_fsm_state_name(t.type, t.state))
		return -EINVAL;
	if ((t.flags & FO_TRANSITION_EXPECT) ?
	    !fo_fsm_state_name(t.expect_type, t.expect_state) :
	    (t.expect_type || t.expect_state))
		return -EINVAL;

	mutex_lock(&fo_lock);
	if ((t.flags & FO_TRANSITION_EXPECT) &&
	    (t.expect_type != fo_type || t.expect_state != fo_state))
		ret = -ESTALE;
	else if (t.type == fo_type && t.state == fo_state)
		ret = 0;	/* no change, no notification */
	else if (!fo_fsm_find(fo_type, fo_state, t.type, t.state))
		ret = -EPROTO;
	else
		fo_change_locked(t.type, t.state, FO_CAUSE_SET);
	mutex_unlock(&fo_lock);
	return ret;
}

static int fo_register(struct fo_client *c, void __user *argp)
{
	struct fo_registration r;
	struct pid *me = task_tgid(current);
	struct mmu_notifier *mn = NULL;
	int signo;
	int ret = 0;

	if (!capable(CAP_NET_ADMIN))
		return -EPERM;
	if (copy_from_user(&r, argp, sizeof(r)))
		return -EFAULT;
	if (!r.flags || r.flags & ~FO_REG_ALL || r.reserved)
		return -EINVAL;
	if (r.flags & FO_REG_NOTIFY) {
		signo = r.signo ? r.signo : SIGFAILOVER;
		if (signo < FO_SIG_MIN || signo > FO_SIG_MAX)
			return -EINVAL;
	} else {
		if (r.signo)
			return -EINVAL;
		signo = 0;
	}

	if ((r.flags & FO_REG_CRITICAL) && !current->mm)
		return -EINVAL;
	/* taken before fo_lock: it needs the mmap lock */
	if (r.flags & FO_REG_CRITICAL) {
		mn = mmu_notifier_get(&fo_mn_ops, current->mm);
		if (IS_ERR(mn))
			return PTR_ERR(mn);
	}

	mutex_lock(&fo_lock);
	if (c->owner && c->owner != me) {
		ret = -EBUSY;
	} else if (!c->owner && fo_nr_registered >= FO_MAX_REGISTRATIONS) {
		ret = -ENOSPC;
	} else {
		if (!c->owner) {
			c->owner = get_pid(me);
			list_add_tail(&c->node, &fo_clients);
			fo_nr_registered++;
		}
		if (c->flags & FO_REG_CRITICAL)
			fo_nr_critical--;
		if (r.flags & FO_REG_CRITICAL)
			fo_nr_critical++;
		c->flags = r.flags;
		c->signo = signo;
		swap(c->mn, mn);	/* the old one, if any, is put below */
	}
	mutex_unlock(&fo_lock);
	if (mn)
		mmu_notifier_put(mn);
	return ret;
}

static int fo_unregister(struct fo_client *c)
{
	int ret = 0;

	mutex_lock(&fo_lock);
	if (!c->owner)
		ret = -ENOENT;
	else if (c->owner != task_tgid(current))
		ret = -EPERM;
	else
		fo_unregister_locked(c);
	mutex_unlock(&fo_lock);
	return ret;
}

static void fo_msg_replace(struct socket *sock, struct net *net, const struct fo_message *m)
{
	struct socket *old_sock;
	struct net *old_net;

	mutex_lock(&fo_msg_lock);
	old_sock = fo_msg_sock;
	old_net = fo_msg_net;
	fo_msg_sock = sock;
	fo_msg_net = net;
	fo_msg_len = m ? m->len : 0;
	if (m)
		memcpy(fo_msg_payload, m->payload, m->len);
	fo_msg_armed = !!sock;
	mutex_unlock(&fo_msg_lock);
	if (old_sock)
		sock_release(old_sock);
	if (old_net)
		put_net(old_net);
}

static int fo_set_message(void __user *argp)
{
	struct sockaddr_in sin;
	struct fo_message *m;
	struct socket *sock = NULL;
	struct net *net;
	int ret;

	if (!capable(CAP_NET_ADMIN))
		return -EPERM;
	m = memdup_user(argp, sizeof(*m));
	if (IS_ERR(m))
		return PTR_ERR(m);
	ret = -EINVAL;
	if (m->flags || m->reserved || m->len > FO_MESSAGE_MAX)
		goto out;
	if (!m->len) {
		fo_msg_replace(NULL, NULL, NULL);
		ret = 0;
		goto out;
	}
	if (ipv4_is_zeronet(m->daddr) || ipv4_is_multicast(m->daddr) ||
	    ipv4_is_lbcast(m->daddr) || !m->dport)
		goto out;
	if (ipv4_is_multicast(m->saddr) || ipv4_is_lbcast(m->saddr))
		goto out;

	net = get_net(current->nsproxy->net_ns);
	ret = sock_create_kern(net, PF_INET, SOCK_DGRAM, IPPROTO_UDP, &sock);
	if (ret)
		goto out_net;
	if (m->saddr || m->sport) {
		memset(&sin, 0, sizeof(sin));
		sin.sin_family = AF_INET;
		sin.sin_addr.s_addr = m->saddr;
		sin.sin_port = m->sport;
		ret = kernel_bind(sock, (struct sockaddr *)&sin, sizeof(sin));
		if (ret)
			goto out_sock;
	}
	/* connect now: a missing route is the daemon's error today, not a silent loss later */
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = m->daddr;
	sin.sin_port = m->dport;
	ret = kernel_connect(sock, (struct sockaddr *)&sin, sizeof(sin), 0);
	if (ret)
		goto out_sock;
	fo_msg_replace(sock, net, m);
	kfree(m);
	return 0;

out_sock:
	sock_release(sock);
out_net:
	put_net(net);
out:
	kfree(m);
	return ret;
}

static long fo_ioctl(struct file *file, unsigned int cmd, unsigned long arg)
{
	struct fo_client *c = file->private_data;
	void __user *argp = (void __user *)arg;

	switch (cmd) {
	case FO_IOC_GET_STATUS:
		return fo_get_status(argp);
	case FO_IOC_SET_STATE:
		return fo_set_state(argp);
	case FO_IOC_REGISTER:
		return fo_register(c, argp);
	case FO_IOC_UNREGISTER:
		return fo_unregister(c);
	case FO_IOC_SET_MESSAGE:
		return fo_set_message(argp);
	default:
		return -ENOTTY;
	}
}

static const struct file_operations fo_fops = {
	.owner = THIS_MODULE,
	.open = fo_open,
	.flush = fo_flush,
	.release = fo_release,
	.unlocked_ioctl = fo_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
	.llseek = no_llseek,
};

static const char * const fo_type_names[] = { "undef", "master", "slave" };
static const char * const fo_state_names[] = {
	"undef", "live", "failed", "syncing", "synced", "nopartner", "none"
};

static ssize_t type_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	u8 t;

	mutex_lock(&fo_lock);
	t = fo_type;
	mutex_unlock(&fo_lock);
	return sysfs_emit(buf, "%s\n", fo_type_names[t]);
}
static DEVICE_ATTR_RO(type);

static ssize_t state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	u8 s;

	mutex_lock(&fo_lock);
	s = fo_state;
	mutex_unlock(&fo_lock);
	return sysfs_emit(buf, "%s\n", fo_state_names[s]);
}
static DEVICE_ATTR_RO(state);

static ssize_t fsm_state_show(struct device *dev, struct device_attribute *attr, char *buf)
{
	const char *name;

	mutex_lock(&fo_lock);
	name = fo_fsm_state_name(fo_type, fo_state);
	mutex_unlock(&fo_lock);
	return sysfs_emit(buf, "%s\n", name);
}
static DEVICE_ATTR_RO(fsm_state);

#define FO_COUNTER_ATTR(name, lock, expr)					\
static ssize_t name##_show(struct device *dev, struct device_attribute *attr,	\
			   char *buf)						\
{										\
	struct mutex *m = (lock);						\
	u64 v;									\
										\
	mutex_lock(m);								\
	v = (expr);								\
	mutex_unlock(m);							\
	return sysfs_emit(buf, "%llu\n", v);					\
}										\
static DEVICE_ATTR_RO(name)

FO_COUNTER_ATTR(generation, &fo_lock, fo_generation);
FO_COUNTER_ATTR(registered, &fo_lock, fo_nr_registered);
FO_COUNTER_ATTR(critical, &fo_lock, fo_nr_critical);
FO_COUNTER_ATTR(signals_dropped, &fo_lock, fo_signals_dropped);
FO_COUNTER_ATTR(critical_deaths, &fo_lock, fo_critical_deaths);
FO_COUNTER_ATTR(message_armed, &fo_msg_lock, fo_msg_armed);
FO_COUNTER_ATTR(messages_sent, &fo_msg_lock, fo_msg_sent);
FO_COUNTER_ATTR(message_errors, &fo_msg_lock, fo_msg_errors);

static struct attribute *fo_attrs[] = {
	&dev_attr_type.attr,
	&dev_attr_state.attr,
	&dev_attr_fsm_state.attr,
	&dev_attr_generation.attr,
	&dev_attr_registered.attr,
	&dev_attr_critical.attr,
	&dev_attr_signals_dropped.attr,
	&dev_attr_critical_deaths.attr,
	&dev_attr_message_armed.attr,
	&dev_attr_messages_sent.attr,
	&dev_attr_message_errors.attr,
	NULL,
};
ATTRIBUTE_GROUPS(fo);

static struct miscdevice fo_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "failover",
	.fops = &fo_fops,
	.groups = fo_groups,
	.mode = 0600,
};

static int __init fo_init(void)
{
	int ret;

	fo_wq = alloc_workqueue("failover", WQ_HIGHPRI | WQ_MEM_RECLAIM, 1);
	if (!fo_wq)
		return -ENOMEM;
	ret = misc_register(&fo_misc);
	if (ret) {
		destroy_workqueue(fo_wq);
		return ret;
	}
	return 0;
}

/* Open descriptors hold a module reference, so no registration is left here. */
static void __exit fo_exit(void)
{
	misc_deregister(&fo_misc);
	cancel_work_sync(&fo_send_work);
	mmu_notifier_synchronize();
	destroy_workqueue(fo_wq);
	fo_msg_replace(NULL, NULL, NULL);
}

module_init(fo_init);
module_exit(fo_exit);

MODULE_DESCRIPTION("oneframe failover state, SIGFAILOVER and critical process watch");
MODULE_AUTHOR("oneframe");
MODULE_LICENSE("GPL");
