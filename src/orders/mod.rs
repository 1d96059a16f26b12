//! Order-stream consumer (in progress).
#[derive(Debug, Clone, clap::Args)]
pub struct OrdersArgs {}
#[derive(Debug, thiserror::Error)]
#[error("not built yet")]
pub struct OrdersError;
pub async fn run(
    _a: OrdersArgs,
    _t: tokio_util::sync::CancellationToken,
) -> Result<(), OrdersError> {
    Err(OrdersError)
}
