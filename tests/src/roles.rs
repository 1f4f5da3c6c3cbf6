//! The roles of the README's table (operator, writer, projector, auditor), each with exactly
//! the permissions it lists, for tests that show each role does its job and no other.

/// The README's role table, as a server configuration (`WFSTATE` stream, default projector
/// and bucket names).
pub const ROLES_CONFIG: &str = r#"
accounts: {
  APP: {
    jetstream: enabled
    users: [
      { user: operator, password: opass }
      { user: writer, password: wpass, permissions: {
          publish: { allow: [
            "wfstate.case.>",
            "$JS.API.INFO", "$JS.API.STREAM.INFO.WFSTATE", "$JS.API.STREAM.MSG.GET.WFSTATE",
            "$JS.API.DIRECT.GET.WFSTATE", "$JS.API.DIRECT.GET.WFSTATE.>"
          ] }
          subscribe: { allow: ["_INBOX.>"] }
      } }
      { user: projector, password: ppass, permissions: {
          publish: { allow: [
            "$JS.API.INFO", "$JS.API.STREAM.INFO.WFSTATE", "$JS.API.STREAM.MSG.GET.WFSTATE",
            "$JS.API.DIRECT.GET.WFSTATE", "$JS.API.DIRECT.GET.WFSTATE.>",
            "$JS.API.CONSUMER.CREATE.WFSTATE.wfstate-projector",
            "$JS.API.CONSUMER.CREATE.WFSTATE.wfstate-projector.>",
            "$JS.API.CONSUMER.INFO.WFSTATE.wfstate-projector",
            "$JS.API.CONSUMER.MSG.NEXT.WFSTATE.wfstate-projector",
            "$JS.ACK.WFSTATE.wfstate-projector.>",
            "$JS.API.STREAM.INFO.KV_WFSTATE_VIEWS", "$JS.API.STREAM.INFO.KV_WFSTATE_QUARANTINE",
            "$JS.API.DIRECT.GET.KV_WFSTATE_VIEWS.>", "$JS.API.DIRECT.GET.KV_WFSTATE_QUARANTINE.>",
            "$KV.WFSTATE_VIEWS.>", "$KV.WFSTATE_QUARANTINE.>",
            "$JS.API.CONSUMER.CREATE.KV_WFSTATE_QUARANTINE",
            "$JS.API.CONSUMER.CREATE.KV_WFSTATE_QUARANTINE.>",
            "$JS.API.CONSUMER.MSG.NEXT.KV_WFSTATE_QUARANTINE.>",
            "$JS.API.CONSUMER.DELETE.KV_WFSTATE_QUARANTINE.>"
          ] }
          subscribe: { allow: ["_INBOX.>"] }
      } }
      { user: auditor, password: apass, permissions: {
          publish: { allow: [
            "$JS.API.INFO", "$JS.API.STREAM.INFO.WFSTATE", "$JS.API.STREAM.MSG.GET.WFSTATE",
            "$JS.API.DIRECT.GET.WFSTATE", "$JS.API.DIRECT.GET.WFSTATE.>",
            "$JS.API.STREAM.INFO.KV_WFSTATE_VIEWS",
            "$JS.API.DIRECT.GET.KV_WFSTATE_VIEWS", "$JS.API.DIRECT.GET.KV_WFSTATE_VIEWS.>",
            "$JS.API.STREAM.INFO.WFSTATE_TREE", "$JS.API.DIRECT.GET.WFSTATE_TREE",
            "$JS.API.STREAM.INFO.WFSTATE_CHECKPOINTS", "$JS.API.DIRECT.GET.WFSTATE_CHECKPOINTS"
          ] }
          subscribe: { allow: ["_INBOX.>"] }
      } }
    ]
  }
}
"#;
