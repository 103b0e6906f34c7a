//! Nodes: ids and ownership.

use peergrid_core::{AccountId, NodeId};

use crate::records::Node;
use crate::state::State;

use super::*;

impl State {
    pub(crate) fn next_node_id(&mut self) -> Result<NodeId, TxError> {
        let g = self.globals_mut();
        let id = g.next_node;
        g.next_node = id
            .checked_add(1)
            .ok_or_else(|| TxError::Overflow("node id".into()))?;
        Ok(id)
    }

    pub(crate) fn own_node(&self, node: NodeId, signer: &AccountId) -> Result<&Node, TxError> {
        let n = self.node(node).ok_or(TxError::UnknownNode(node))?;
        if n.account != *signer {
            return Err(TxError::NotNodeKey {
                node,
                signer: *signer,
            });
        }
        Ok(n)
    }
}
