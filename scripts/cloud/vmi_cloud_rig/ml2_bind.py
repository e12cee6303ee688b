"""ML2 mechanism driver `vmi_bind`: binds every port without an L2 agent.

Real ML2 drivers (openvswitch, linuxbridge, ...) only bind a port when a live
agent reports on the host.  The rig runs no agents (no OVS, no namespaces), so
without this driver every Nova boot ends in PortBindingFailed.  This driver
binds the first segment offered with vif_type=ovs (what the openvswitch driver
would answer for a plain OVS host) and marks the port ACTIVE, which is what the
agent would report once the tap device is wired.  Registered under the
entry-point group `neutron.ml2.mechanism_drivers` as `vmi_bind`.
"""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api
from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class VmiBindMechanismDriver(api.MechanismDriver):

    def initialize(self):
        LOG.info("vmi_bind mechanism driver: binding ports without agents "
                 "(test rig only)")

    @property
    def connectivity(self):
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        port = context.current
        if port.get(portbindings.VNIC_TYPE, portbindings.VNIC_NORMAL) not in (
                portbindings.VNIC_NORMAL,):
            return
        for segment in context.segments_to_bind:
            context.set_binding(
                segment[api.ID],
                portbindings.VIF_TYPE_OVS,
                {portbindings.CAP_PORT_FILTER: True,
                 portbindings.OVS_HYBRID_PLUG: False,
                 portbindings.VIF_DETAILS_CONNECTIVITY: self.connectivity},
                status=constants.PORT_STATUS_ACTIVE)
            LOG.debug("vmi_bind: bound port %s to segment %s",
                      port['id'], segment[api.ID])
            return
