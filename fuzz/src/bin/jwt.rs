fn main() {
    afl::fuzz!(|data: &[u8]| trustmesh_fuzz::jwt(data));
}
