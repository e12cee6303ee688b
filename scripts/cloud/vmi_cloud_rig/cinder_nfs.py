"""Cinder volume driver `vmi_cloud_rig.cinder_nfs.VmiNfsDriver` (test rig only).

A subclass of cinder's NfsDriver.  For a volume that is attached ("in-use"),
the upstream driver creates and deletes snapshots *assisted by Nova*: Cinder
writes the qcow2 overlay, then asks Nova (os-assisted-volume-snapshots) to
switch the running guest onto it (libvirt blockRebase/blockCommit).  Nova's
fake driver cannot do that, so a forced snapshot of an in-use volume would
sit in `creating` for 600 s and then go to `error`.

Here the online paths do what the offline paths do:
  * _create_snapshot_online: _do_create_snapshot() - the same qcow2 overlay
    (backing file = current active file); the caller then points the
    attachment's connection info at the new active file, as upstream does.
  * _delete_snapshot_online: the offline delete (qemu-img commit the overlay
    down, rebase the next one, update the .info file); then the attachment's
    connection info is pointed at whatever is now the active file.

Faithful here because the guests are fake: no hypervisor holds the file open
or writes to it, so switching files under it is exactly what Nova would have
done, and the snapshot holds the volume's bytes at the time it was taken.
"""
import os

from oslo_log import log as logging

from cinder.volume.drivers import nfs

LOG = logging.getLogger(__name__)


class VmiNfsDriver(nfs.NfsDriver):

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._vmi_offline_volumes = set()

    def _is_volume_attached(self, volume):
        if volume.id in self._vmi_offline_volumes:
            return False
        return super()._is_volume_attached(volume)

    def _create_snapshot_online(self, snapshot, backing_filename,
                                new_snap_path):
        LOG.info("vmi: snapshot %s of in-use volume %s taken without Nova "
                 "assistance (fake guests do not write)",
                 snapshot.id, snapshot.volume.id)
        self._do_create_snapshot(snapshot, backing_filename, new_snap_path)

    def _delete_snapshot_online(self, context, snapshot, info):
        volume = snapshot.volume
        LOG.info("vmi: deleting snapshot %s of in-use volume %s without Nova "
                 "assistance", snapshot.id, volume.id)
        self._vmi_offline_volumes.add(volume.id)
        try:
            self._delete_snapshot(snapshot)
        finally:
            self._vmi_offline_volumes.discard(volume.id)
        self._vmi_repoint_attachments(volume)

    def _vmi_repoint_attachments(self, volume):
        active = self.get_active_image_from_info(volume)
        path = os.path.join(self._local_volume_dir(volume), active)
        fmt = self._qemu_img_info(path, volume.name).file_format
        for attachment in volume.volume_attachment:
            ci = attachment.connection_info
            if not ci:
                continue
            ci['name'] = active
            if 'format' in ci:
                ci['format'] = fmt
            # let OVO know it has been updated
            attachment.connection_info = ci
            attachment.save()
        LOG.debug("vmi: volume %s active file is now %s (%s)",
                  volume.id, active, fmt)
