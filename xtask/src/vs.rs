use anyhow::Result;
pub fn run(_args: &[String]) -> Result<u8> {
    anyhow::bail!("todo")
}
