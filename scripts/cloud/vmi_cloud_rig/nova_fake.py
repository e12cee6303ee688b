"""Nova compute driver `vmi_fake.VmiFakeDriver` (test rig only).

A subclass of nova's in-tree FakeDriver with two gaps closed:

1. snapshot() (createImage of a server booted from an image): FakeDriver only
   flips the task state and uploads nothing, leaving an empty `queued` image.
   Here the server's base image is downloaded from Glance and uploaded as the
   snapshot's data, with the metadata set the way the libvirt driver sets it
   (_create_snapshot_metadata: disk_format from the source disk, container
   format from the base image, image_location/image_state/owner_id/... ).
   Faithful because a fake guest never writes to its disk: its disk *is* the
   base image, so a real hypervisor would upload exactly these bytes.

2. Guests surviving a nova-compute restart: FakeDriver keeps its guests in
   memory only, so after `down`/`up` every server would be unknown to the
   driver (os-stop -> InstanceNotFound, createImage -> InstanceNotRunning).
   init_host() re-registers the guests that the database places on this host,
   in the power state the database recorded - like libvirt domains, which
   outlive a restart of the nova-compute process.

Nova only loads compute drivers from inside the nova.virt package, so the rig
drops a one-line module nova/virt/vmi_fake.py re-exporting this class.
"""
import os
import tempfile

from oslo_log import log as logging

from nova.compute import power_state
from nova.compute import task_states
from nova.compute import vm_states
import nova.conf
from nova import context as nova_context
from nova import exception
from nova.image import glance
from nova import objects
from nova.virt import fake

CONF = nova.conf.CONF
LOG = logging.getLogger(__name__)

_RESTORE_STATES = {
    vm_states.ACTIVE: power_state.RUNNING,
    vm_states.STOPPED: power_state.SHUTDOWN,
    vm_states.PAUSED: power_state.PAUSED,
    vm_states.SUSPENDED: power_state.SUSPENDED,
    vm_states.RESCUED: power_state.RUNNING,
    vm_states.RESIZED: power_state.RUNNING,
}


class VmiFakeDriver(fake.FakeDriver):

    def __init__(self, virtapi, read_only=False):
        super().__init__(virtapi, read_only)
        self._image_api = glance.API()

    # -- guests survive a nova-compute restart ---------------------------
    def init_host(self, host):
        super().init_host(host)
        try:
            self._vmi_restore_guests(host)
        except Exception:
            LOG.exception("vmi_fake: could not re-register guests of host %s",
                          host)

    def _vmi_restore_guests(self, host):
        ctxt = nova_context.get_admin_context()
        instances = objects.InstanceList.get_by_host(
            ctxt, host, expected_attrs=['flavor', 'info_cache'])
        restored = 0
        for inst in instances:
            state = _RESTORE_STATES.get(inst.vm_state)
            if state is None or inst.uuid in self.instances:
                continue
            if inst.power_state in (power_state.RUNNING, power_state.SHUTDOWN,
                                    power_state.PAUSED,
                                    power_state.SUSPENDED):
                state = inst.power_state
            self.instances[inst.uuid] = fake.FakeInstance(
                inst.name, state, inst.uuid)
            flavor = inst.flavor
            self.resources.claim(vcpus=flavor.vcpus, mem=flavor.memory_mb,
                                 disk=flavor.root_gb)
            try:
                for vif in inst.info_cache.network_info or []:
                    self._interfaces[vif['id']] = vif
            except Exception:
                pass
            restored += 1
        LOG.info("vmi_fake: re-registered %d guest(s) on host %s",
                 restored, host)

    # -- createImage uploads real bytes ----------------------------------
    def _vmi_snapshot_metadata(self, instance, img_fmt, snp_name):
        # mirrors nova.virt.libvirt.driver.LibvirtDriver._create_snapshot_metadata
        image_meta = instance.image_meta
        metadata = {'status': 'active',
                    'name': snp_name,
                    'properties': {
                        'kernel_id': instance.kernel_id,
                        'image_location': 'snapshot',
                        'image_state': 'available',
                        'owner_id': instance.project_id,
                        'ramdisk_id': instance.ramdisk_id,
                    }}
        if instance.os_type:
            metadata['properties']['os_type'] = instance.os_type
        if image_meta.obj_attr_is_set('disk_format') and \
                image_meta.disk_format == 'ami':
            metadata['disk_format'] = 'ami'
        else:
            metadata['disk_format'] = img_fmt
        if image_meta.obj_attr_is_set('container_format'):
            metadata['container_format'] = image_meta.container_format
        else:
            metadata['container_format'] = 'bare'
        return metadata

    def snapshot(self, context, instance, image_id, update_task_state):
        if instance.uuid not in self.instances:
            raise exception.InstanceNotRunning(instance_id=instance.uuid)
        base_ref = instance.image_ref
        if not base_ref:
            # volume-backed servers are snapshotted by the API via Cinder and
            # never reach the driver; keep FakeDriver's behaviour just in case
            return super().snapshot(context, instance, image_id,
                                    update_task_state)
        snapshot = self._image_api.get(context, image_id)
        base = self._image_api.get(context, base_ref)
        img_fmt = base.get('disk_format') or 'raw'
        metadata = self._vmi_snapshot_metadata(instance, img_fmt,
                                               snapshot['name'])
        LOG.info("vmi_fake: snapshot of %s: uploading base image %s (%s) as "
                 "image %s", instance.uuid, base_ref, img_fmt, image_id,
                 instance=instance)
        update_task_state(task_state=task_states.IMAGE_PENDING_UPLOAD)
        tmp_root = CONF.instances_path if os.path.isdir(
            CONF.instances_path) else None
        with tempfile.TemporaryDirectory(prefix='vmi-snap-',
                                         dir=tmp_root) as tmp:
            path = os.path.join(tmp, 'disk')
            self._image_api.download(context, base_ref, dest_path=path)
            update_task_state(task_state=task_states.IMAGE_UPLOADING,
                              expected_state=task_states.IMAGE_PENDING_UPLOAD)
            with open(path, 'rb') as image_file:
                self._image_api.update(context, image_id, metadata,
                                       image_file)
        LOG.info("vmi_fake: snapshot image upload complete",
                 instance=instance)
